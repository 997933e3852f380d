"""NCF's leave-one-out files (He et al., WWW 2017), the split NCF, DeepCF, APR and RAWP-FT report against:
``NAME.train.rating`` and ``NAME.test.rating`` (``user \\t item [\\t rating [\\t timestamp]]``, 0-based ids, one
test pair per user) and ``NAME.test.negative`` (``(user,item) \\t n1 \\t ... \\t nK``: the test pair, then its
sampled negatives). The split is kept as given and the negatives become the split's test candidates.

Without ``NAME.train.rating`` (NCF's ML-1M copy is often shared without it), ``ml1m_root`` rebuilds it from
MovieLens 1M: user = UserID - 1, item = the order in which a MovieID first appears in ``ratings.dat``'s row
order, and the training set is every pair but the users' test pairs (994,169 for ML-1M)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from distrec.data.errors import BadLines, DataFormatError
from distrec.data.readers.text import iter_lines, require_file
from distrec.data.source import RawDataset, raw_interactions


def _read_pairs(path: Path, bad: BadLines) -> dict[str, np.ndarray]:
    """``user item [rating [timestamp]]`` tab-separated lines; ratings and timestamps only when every line has
    them."""
    cols: dict[str, list] = {"user": [], "item": [], "rating": [], "timestamp": [], "line": []}
    for lineno, text in iter_lines(path):
        parts = text.split("\t")
        if not 2 <= len(parts) <= 4:
            bad.handle(
                DataFormatError(path, f"wrong field count: expected 2 to 4 tab-separated, found {len(parts)}", lineno)
            )
            continue
        try:
            values = [int(parts[0]), int(parts[1])]
            values += [float(parts[2]) if len(parts) > 2 else None, int(parts[3]) if len(parts) > 3 else None]
        except ValueError:
            bad.handle(DataFormatError(path, f"non-numeric field in {text!r}", lineno))
            continue
        if min(values[:2]) < 0:
            bad.handle(DataFormatError(path, "negative id: ids are 0-based", lineno))
            continue
        for key, v in zip(("user", "item", "rating", "timestamp", "line"), [*values, lineno]):
            cols[key].append(v)
    out = {"user": np.array(cols["user"], np.int64), "item": np.array(cols["item"], np.int64)}
    out["line"] = np.array(cols["line"], np.int64)
    for key, dtype in (("rating", np.float32), ("timestamp", np.int64)):
        out[key] = None if any(v is None for v in cols[key]) or not cols[key] else np.array(cols[key], dtype)
    return out


def _read_negatives(path: Path, bad: BadLines, negatives: int) -> dict[int, tuple[int, list[int], int] | None]:
    """``(user,item) \\t n1 ... nK`` lines: user -> (its test item, its negatives, the line), or None for a user
    whose line was skipped."""
    out: dict[int, tuple[int, list[int], int] | None] = {}
    for lineno, text in iter_lines(path):
        head, *rest = text.split("\t")
        try:
            if not (head.startswith("(") and head.endswith(")")):
                raise ValueError(head)
            user, item = (int(x) for x in head[1:-1].split(","))
            items = [int(x) for x in rest]
        except ValueError:
            bad.handle(
                DataFormatError(path, f"expected '(user,item)' then tab-separated item ids, found {head!r}", lineno)
            )
            continue
        if len(items) != negatives:
            bad.handle(DataFormatError(path, f"expected {negatives} negatives, found {len(items)}", lineno))
            out[user] = None
            continue
        if user in out:
            bad.handle(DataFormatError(path, f"user {user} has a second negative line", lineno))
            out[user] = None
            continue
        out[user] = (item, items, lineno)
    return out


def _ml1m_train(root: Path, test: dict[str, np.ndarray], test_path: Path) -> tuple[dict[str, np.ndarray], list]:
    """The ML-1M training pairs under NCF's ids (every ML-1M pair except the test pairs), and the source records
    of the ML-1M files read."""
    from distrec.data.readers.movielens import read_ml_1m

    ml1m = read_ml_1m(root)
    inter = ml1m.interactions
    users = np.asarray(inter.column("user").to_pylist(), np.int64) - 1
    movies = inter.column("item").to_numpy(zero_copy_only=False)
    _, first = np.unique(movies, return_index=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    items = rank[np.unique(movies, return_inverse=True)[1]]
    n_items = len(first)
    pair = users * n_items + items
    test_pair = test["user"] * n_items + test["item"]
    found = np.isin(test_pair, pair)
    if not found.all():
        row = int(np.argmax(~found))
        raise DataFormatError(
            test_path,
            f"test pair ({test['user'][row]},{test['item'][row]}) is not an ML-1M rating of {root}: ml1m_root must be "
            "the MovieLens 1M the file was made from",
            int(test["line"][row]),
        )
    keep = ~np.isin(pair, test_pair)
    out = {"user": users[keep], "item": items[keep], "line": np.zeros(int(keep.sum()), np.int64)}
    has = inter.column("rating").null_count == 0
    out["rating"] = inter.column("rating").to_numpy()[keep] if has else None
    out["timestamp"] = inter.column("timestamp").to_numpy()[keep] if has else None
    return out, ml1m.sources


def read_ncf(
    root: str | Path,
    *,
    name: str = "ml-1m",
    negatives: int = 99,
    ml1m_root: str | None = None,
    on_bad_lines: str = "error",
) -> RawDataset:
    """Read ``root/NAME.{train,test}.rating`` and ``root/NAME.test.negative``. Every anomaly is reported, none
    fixed: a test user without training pairs, a test or negative item beyond the training items, a test pair
    also in training, a negative line that disagrees with the test file or has other than ``negatives`` items
    are located errors (skipped and counted with ``on_bad_lines: skip``); negatives the user rated are kept and
    counted in the notes (NCF's ML-1M file lists, for 156 users, the test item itself; NCF's evaluation
    collapses it into the held-out item, and so does distrec's sampled protocol)."""
    root = Path(root)
    bad = BadLines(on_bad_lines)
    raw = RawDataset(name, bad_lines=bad)
    test_path = require_file(root, f"{name}.test.rating")
    neg_path = require_file(root, f"{name}.test.negative")
    train_path = root / f"{name}.train.rating"
    test = _read_pairs(test_path, bad)
    if train_path.exists():
        train = _read_pairs(train_path, bad)
        raw.add_source(train_path)
    elif ml1m_root is not None:
        train, sources = _ml1m_train(Path(ml1m_root), test, test_path)
        raw.sources += sources
        raw.notes.append(f"{name}.train.rating rebuilt from {ml1m_root}: {len(train['user']):,} pairs")
    else:
        raise DataFormatError(
            train_path, "file not found: give it, or ml1m_root (a MovieLens 1M folder) to rebuild it from ML-1M"
        )
    raw.add_source(test_path)
    raw.add_source(neg_path)
    n_items = int(train["item"].max()) + 1  # NCF's item count: the training file's largest id + 1
    keep = _check_test(test, train, n_items, test_path, bad)
    by_user = _read_negatives(neg_path, bad, negatives)
    for u in np.setdiff1d(test["user"][~keep], test["user"][keep]).tolist():  # a skipped test pair's negatives
        by_user.pop(u, None)
    users, candidates = [], []
    for row in np.flatnonzero(keep):
        u, i, line = int(test["user"][row]), int(test["item"][row]), int(test["line"][row])
        if by_user.get(u, False) is None:  # its negative line was skipped: so is the test pair
            del by_user[u]
            keep[row] = False
            continue
        if u not in by_user:
            bad.handle(DataFormatError(neg_path, f"no negative line for test user {u} ({test_path.name}:{line})"))
            keep[row] = False
            continue
        item, items, neg_line = by_user.pop(u)
        problem = (
            f"({u},{item}) differs from {test_path.name}:{line}'s ({u},{i})"
            if item != i
            else f"negative item {max(items)} is beyond the training items (0..{n_items - 1})"
            if max(items) >= n_items or min(items) < 0
            else None
        )
        if problem:
            bad.handle(DataFormatError(neg_path, problem, neg_line))
            keep[row] = False
            continue
        users.append(u)
        candidates.append(items)
    for u, entry in by_user.items():
        if entry is not None:
            bad.handle(DataFormatError(neg_path, f"user {u} has no test pair in {test_path.name}", entry[2]))
    if not keep.all():
        raw.notes.append(f"{int((~keep).sum())} test pairs dropped with their skipped lines (on_bad_lines: skip)")
    _note_rated_negatives(raw, train, test, n_items, keep, users, candidates)
    for key in ("rating", "timestamp"):
        if train[key] is None or test[key] is None:
            train[key] = test[key] = None
    split = ["train"] * len(train["user"]) + ["test"] * int(keep.sum())
    cat = lambda key: None if train[key] is None else np.concatenate([train[key], test[key][keep]])  # noqa: E731
    raw.interactions = raw_interactions(cat("user"), cat("item"), cat("rating"), cat("timestamp"), split=split)
    n_users = int(max(train["user"].max(), test["user"].max())) + 1
    ids = lambda n: pa.table({"key": np.arange(n, dtype=np.int64), "original": np.arange(n, dtype=np.int64)})  # noqa: E731
    raw.users, raw.items = ids(n_users), ids(n_items)
    offsets = np.arange(0, len(users) * negatives + 1, negatives, dtype=np.int32)
    raw.test_candidates = pa.table(
        {
            "user": pa.array(users, pa.int64()),
            "items": pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.ravel(candidates), pa.int64())),
        }
    )
    return raw


def _check_test(test: dict, train: dict, n_items: int, path: Path, bad: BadLines) -> np.ndarray:
    """The test rows that hold: one per user, a user with training pairs, an item within the training items,
    a pair not in training."""
    has_train = np.zeros(max(int(test["user"].max()), int(train["user"].max())) + 1, bool)
    has_train[train["user"]] = True
    in_train = np.isin(test["user"] * n_items + test["item"], train["user"] * n_items + train["item"])
    keep = np.ones(len(test["user"]), bool)
    seen: dict[int, int] = {}
    for row, (u, i, line) in enumerate(zip(test["user"].tolist(), test["item"].tolist(), test["line"].tolist())):
        problem = (
            f"user {u} has a second test pair (first at line {seen[u]})"
            if u in seen
            else f"user {u} has no training interactions"
            if not has_train[u]
            else f"item {i} is beyond the training items (0..{n_items - 1})"
            if i >= n_items
            else f"the pair ({u},{i}) is also a training pair"
            if in_train[row]
            else None
        )
        if problem:
            bad.handle(DataFormatError(path, problem, line))
            keep[row] = False
        seen.setdefault(u, line)
    return keep


def _note_rated_negatives(
    raw: RawDataset, train: dict, test: dict, n_items: int, keep, users: list, candidates: list
) -> None:
    """Count (in the notes) the negatives a user rated: its test item, or one of its training items."""
    if not users:
        return
    negs = np.asarray(candidates, np.int64)
    u = np.asarray(users, np.int64)
    held = dict(zip(test["user"][keep].tolist(), test["item"][keep].tolist()))
    is_test = negs == np.array([held[x] for x in users])[:, None]
    rated = np.isin(u[:, None] * n_items + negs, train["user"] * n_items + train["item"])
    if is_test.any():
        raw.notes.append(
            f"{int(is_test.any(1).sum())} users' negative lines list their own test item (kept as in the file; the "
            "sampled protocol ranks the held-out item against the other negatives, as NCF's evaluation does)"
        )
    if rated.any():
        raw.notes.append(
            f"{int(rated.any(1).sum())} users' negative lines list an item of their training set ({int(rated.sum())} "
            "negatives; kept as in the file)"
        )
    test_only = np.setdiff1d(test["item"][keep], train["item"])
    if len(test_only):
        raw.notes.append(f"{len(test_only)} test items have no training pair")
