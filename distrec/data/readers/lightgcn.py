"""The LightGCN split format: ``train.txt`` / ``test.txt`` lines ``user item item ...`` (0-based remapped
ids) with ``user_list.txt`` / ``item_list.txt`` mapping ``org_id remap_id``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from distrec.data.errors import BadLines, DataFormatError
from distrec.data.readers.text import iter_lines, parse_id_lists
from distrec.data.source import RawDataset, raw_interactions


def _read_id_list(path: Path, bad: BadLines) -> pa.Table:
    """``org_id remap_id`` lines after a header; remap ids must be 0..n-1 in order."""
    originals: list[str] = []
    for lineno, text in iter_lines(path):
        parts = text.split()
        if lineno == 1 and parts == ["org_id", "remap_id"]:
            continue
        if len(parts) != 2:
            bad.handle(
                DataFormatError(
                    path, f"wrong field count: expected 'org_id remap_id', found {len(parts)} fields", lineno
                )
            )
            continue
        if parts[1] != str(len(originals)):
            raise DataFormatError(
                path, f"remap_id {parts[1]!r} out of order: expected {len(originals)}", lineno, text.rfind(parts[1]) + 1
            )
        originals.append(parts[0])
    keys = np.arange(len(originals), dtype=np.int64)
    original = pa.array(originals, pa.string())
    if all(o.isdigit() for o in originals):
        original = original.cast(pa.int64())
    return pa.table({"key": keys, "original": original})


def read_lightgcn(root: str | Path, *, on_bad_lines: str = "error") -> RawDataset:
    """Read whichever of ``train.txt`` / ``test.txt`` exist. With both, the files are the given split;
    with one, its interactions carry no split (re-split them when preparing)."""
    root = Path(root)
    bad = BadLines(on_bad_lines)
    raw = RawDataset(root.name, bad_lines=bad)
    present = [s for s in ("train", "test") if (root / f"{s}.txt").exists()]
    if not present:
        raise DataFormatError(root, "no train.txt or test.txt: expected LightGCN split files 'user item item ...'")
    for name, attr in (("user_list.txt", "users"), ("item_list.txt", "items")):
        if (root / name).exists():
            setattr(raw, attr, _read_id_list(root / name, bad))
            raw.add_source(root / name)
    users, items, splits = [], [], []
    for split in present:
        path = root / f"{split}.txt"
        u, i, lines = parse_id_lists(path, bad)
        for ids, table, what in ((u, raw.users, "user"), (i, raw.items, "item")):
            if table is not None and len(ids):
                bad_rows = (ids < 0) | (ids >= table.num_rows)
                if bad_rows.any():
                    row = int(np.argmax(bad_rows))
                    raise DataFormatError(
                        path, f"{what} id {ids[row]} out of range: {what}_list.txt has {table.num_rows} ids", lines[row]
                    )
        users.append(u)
        items.append(i)
        splits += [split] * len(u)
        raw.add_source(path)
        empty = sum(1 for _, t in iter_lines(path) if len(t.split()) == 1)
        if empty:
            raw.notes.append(f"{path.name}: {empty} users listed without items")
    split_col = splits if len(present) == 2 else None
    if len(present) == 1:
        raw.notes.append(f"only {present[0]}.txt is present: its interactions carry no given split")
    raw.interactions = raw_interactions(np.concatenate(users), np.concatenate(items), split=split_col)
    return raw
