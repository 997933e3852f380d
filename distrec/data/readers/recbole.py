"""RecBole atomic files: ``<name>.inter`` / ``.item`` / ``.user`` (and ``.train/.valid/.test.inter``
benchmark splits), tab-separated with typed headers such as ``user_id:token``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from distrec.data.errors import BadLines, DataFormatError
from distrec.data.readers.text import iter_lines
from distrec.data.source import RawDataset, raw_interactions

TYPES = ("token", "token_seq", "float", "float_seq")


def read_atomic(path: Path, bad: BadLines) -> dict[str, tuple[str, list]]:
    """Parse one atomic file into ``field -> (type, values)``; floats parsed, token_seq split on spaces."""
    lines = iter_lines(path)
    _, header = next(lines)
    fields = []
    for col, spec in enumerate(header.split("\t"), start=1):
        name, _, kind = spec.partition(":")
        if kind not in TYPES:
            raise DataFormatError(path, f"header field {spec!r}: expected name:type with type in {TYPES}", 1, col)
        if any(name == f for f, _ in fields):
            raise DataFormatError(path, f"duplicate field {name!r} in header", 1, col)
        fields.append((name, kind))
    out = {name: (kind, []) for name, kind in fields}
    for lineno, text in lines:
        if text.split("\t") == header.split("\t"):
            bad.handle(DataFormatError(path, "duplicate header line", lineno))
            continue
        parts = text.split("\t")
        if len(parts) != len(fields):
            bad.handle(
                DataFormatError(
                    path, f"wrong field count: expected {len(fields)} tab-separated fields, found {len(parts)}", lineno
                )
            )
            continue
        row = []
        try:
            for col, ((name, kind), value) in enumerate(zip(fields, parts), start=1):  # noqa: B007  (named in the error below)
                if kind == "float":
                    row.append(float(value) if value else float("nan"))
                elif kind == "float_seq":
                    row.append([float(v) for v in value.split()])
                elif kind == "token_seq":
                    row.append(value.split())
                else:
                    row.append(value)
        except ValueError:
            bad.handle(DataFormatError(path, f"non-numeric {name}: {value!r}", lineno, col))
            continue
        for (name, _), v in zip(fields, row):
            out[name][1].append(v)
    return out


def _field(path: Path, data: dict, name: str, required: bool = True):
    if name not in data:
        if required:
            raise DataFormatError(
                path, f"missing field {name!r}; header has {list(data)} (set {name.split('_')[0]}_field=...)", 1
            )
        return None
    return data[name][1]


def read_recbole(
    root: str | Path,
    *,
    on_bad_lines: str = "error",
    name: str | None = None,
    user_field: str = "user_id",
    item_field: str = "item_id",
    rating_field: str = "rating",
    time_field: str = "timestamp",
    category_field: str | None = None,
) -> RawDataset:
    """Field names default to RecBole's (``USER_ID_FIELD`` etc.); ``category_field`` defaults to the first
    ``token_seq`` field of the ``.item`` file."""
    root = Path(root)
    if name is None:
        inters = sorted(p for p in root.glob("*.inter") if p.name.count(".") == 1)
        if len(inters) != 1:
            raise DataFormatError(
                root, f"found {len(inters)} .inter files {[p.name for p in inters]}; choose one with name=<name>"
            )
        name = inters[0].stem
    bad = BadLines(on_bad_lines)
    raw = RawDataset(name, bad_lines=bad)
    split_paths = [root / f"{name}.{s}.inter" for s in ("train", "valid", "test")]
    paths = split_paths if all(p.exists() for p in split_paths) else [root / f"{name}.inter"]
    users, items, ratings, times, splits = [], [], [], [], []
    for path in paths:
        if not path.exists():
            raise DataFormatError(path, f"file not found: expected {path.name} in {root}")
        data = read_atomic(path, bad)
        u, i = _field(path, data, user_field), _field(path, data, item_field)
        r, t = _field(path, data, rating_field, False), _field(path, data, time_field, False)
        users += u
        items += i
        ratings += r if r is not None else [1.0] * len(u)
        times.append(np.asarray(t, np.float64) if t is not None else np.full(len(u), np.nan))
        if len(paths) == 3:
            splits += [path.name.split(".")[1]] * len(u)
        raw.add_source(path)
    ts = np.concatenate(times)
    ts_valid = ~np.isnan(ts)
    raw.interactions = raw_interactions(users, items, ratings, None, splits or None)
    raw.interactions = raw.interactions.set_column(
        3, "timestamp", pa.array(np.where(ts_valid, ts, 0).astype(np.int64), pa.int64(), mask=~ts_valid)
    )
    item_path = root / f"{name}.item"
    if item_path.exists():
        data = read_atomic(item_path, bad)
        keys = _field(item_path, data, item_field)
        if category_field is None:
            category_field = next((f for f, (k, _) in data.items() if k == "token_seq"), None)
        if category_field is not None:
            cats = _field(item_path, data, category_field)
            names = sorted({c for cs in cats for c in cs})
            index = {c: j for j, c in enumerate(names)}
            raw.item_attributes = pa.table(
                {
                    "item": pa.array(keys, pa.string()),
                    "categories": pa.array([[index[c] for c in cs] for cs in cats], pa.list_(pa.int32())),
                }
            )
            raw.category_names = names
        raw.add_source(item_path)
    user_path = root / f"{name}.user"
    if user_path.exists():
        data = read_atomic(user_path, bad)
        cols = {"user": pa.array(_field(user_path, data, user_field), pa.string())}
        for f, (kind, values) in data.items():
            if f != user_field and kind in ("token", "float"):
                cols[f] = pa.array(values, pa.string() if kind == "token" else pa.float64())
        raw.user_attributes = pa.table(cols)
        raw.add_source(user_path)
    return raw
