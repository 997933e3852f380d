"""S3Rec / SASRec sequence text: ``user item item ...`` per line in time order (or ``user item`` pairs,
one per line, also in time order), with an optional ``<Name>_item2attributes.json``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from distrec.data.errors import BadLines, DataFormatError
from distrec.data.readers.text import parse_id_lists
from distrec.data.source import RawDataset, raw_interactions


def _pick_file(root: Path, name: str | None) -> Path:
    if root.is_file():
        return root
    if name:
        path = root / f"{name}.txt"
        if not path.exists():
            raise DataFormatError(path, f"file not found: expected {name}.txt in {root}")
        return path
    candidates = sorted(p for p in root.glob("*.txt"))
    if len(candidates) != 1:
        raise DataFormatError(
            root, f"found {len(candidates)} sequence files {[p.name for p in candidates]}; choose one with name=<Name>"
        )
    return candidates[0]


def _read_attributes(path: Path) -> tuple[pa.Table, int]:
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataFormatError(path, f"invalid JSON: {exc.msg}", exc.lineno, exc.colno) from None
    if not isinstance(mapping, dict):
        raise DataFormatError(path, "expected a JSON object mapping item id -> list of attribute ids")
    keys, cats = [], []
    for k, v in mapping.items():
        if not str(k).isdigit() or not isinstance(v, list) or not all(isinstance(a, int) for a in v):
            raise DataFormatError(
                path, f"entry {k!r}: expected a numeric item id mapping to a list of integer attribute ids"
            )
        keys.append(int(k))
        cats.append(v)
    n_attr = max((max(c) for c in cats if c), default=-1) + 1
    return pa.table({"item": pa.array(keys, pa.int64()), "categories": pa.array(cats, pa.list_(pa.int32()))}), n_attr


def read_sequence(root: str | Path, *, on_bad_lines: str = "error", name: str | None = None) -> RawDataset:
    """Rows keep file order, which is time order within each user (``ordered``); no timestamps."""
    root = Path(root)
    path = _pick_file(root, name)
    bad = BadLines(on_bad_lines)
    raw = RawDataset(path.stem, bad_lines=bad, ordered=True)
    users, items, lines = parse_id_lists(path, bad)
    users, items, lines = _one_line_per_user(path, users, items, np.asarray(lines, np.int64), bad)
    raw.add_source(path)
    raw.interactions = raw_interactions(users, items)
    attributes = path.with_name(f"{path.stem}_item2attributes.json")
    if attributes.exists():
        raw.item_attributes, n_attr = _read_attributes(attributes)
        raw.category_names = [str(a) for a in range(n_attr)]
        raw.add_source(attributes)
        known = raw.item_attributes.column("item").to_numpy()
        unknown = ~np.isin(known, items)
        if unknown.any():
            raw.notes.append(f"{attributes.name}: {int(unknown.sum())} items without interactions are not kept")
        bare = ~np.isin(items, known)
        if bare.any():
            first = int(np.flatnonzero(bare)[0])
            raw.notes.append(
                f"{path.name}: {len(np.unique(items[bare]))} items have no entry in {attributes.name} (first: item "
                f"{items[first]} on line {lines[first]}); they get no categories"
            )
    return raw


def _one_line_per_user(path: Path, users: np.ndarray, items: np.ndarray, lines: np.ndarray, bad: BadLines):
    """In the list format (``user item item ...``) each user has one line: a user on a second line is an
    error naming both lines (with ``skip``, the later line is dropped and reported). Files of ``user item``
    pairs, one per line, are the other format and list a user on many lines."""
    per_line = np.bincount(lines) if len(lines) else np.zeros(0, np.int64)
    if not len(lines) or per_line.max() <= 1:
        return users, items, lines
    keep = np.ones(len(users), bool)
    first_line: dict[int, int] = {}
    for u, line in sorted(set(zip(users.tolist(), lines.tolist())), key=lambda p: p[1]):
        if u in first_line:
            bad.handle(
                DataFormatError(
                    path,
                    f"user {u} is listed again (first on line {first_line[u]}); a sequence file has one line per user",
                    line,
                )
            )
            keep &= lines != line
        else:
            first_line[u] = line
    return users[keep], items[keep], lines[keep]
