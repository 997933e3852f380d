"""``RawDataset``: what a reader returns, in the source's own ids, before preprocessing."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from distrec.data.errors import BadLines, DataFormatError


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class RawDataset:
    """A dataset as read from its source files, ids as the source spells them.

    ``interactions`` columns: ``user``, ``item`` (int64 or string keys), ``rating`` float32 (all null
    when the source has no ratings), ``timestamp`` int64 (nullable), and ``split`` (string, only when
    the source gives a split).
    ``users`` / ``items``: optional id universes, tables with ``key`` (as in interactions) and ``original``
    (the id to report); row order is the internal id order. Without one, the universe is the sorted
    distinct keys of the interactions.
    ``ordered``: rows of a user are in time order (sequence files), so leave-one-out may use row order.
    ``test_candidates``: the source's own negatives of its test split (``user`` key, ``items`` list of keys),
    stored as the prepared ``test_negatives`` table (NCF's ``.test.negative``).
    """

    name: str
    interactions: pa.Table | None = None
    users: pa.Table | None = None
    items: pa.Table | None = None
    item_attributes: pa.Table | None = None
    category_names: list[str] | None = None
    user_attributes: pa.Table | None = None
    item_images: pa.Table | None = None
    test_candidates: pa.Table | None = None
    labeled_images: dict[str, pa.Table] = field(default_factory=dict)
    ordered: bool = False
    sources: list[dict] = field(default_factory=list)
    bad_lines: BadLines = field(default_factory=BadLines)
    notes: list[str] = field(default_factory=list)

    def add_source(self, path: str | Path) -> None:
        """Record a source file with its size and sha256 for the dataset's metadata."""
        p = Path(path)
        self.sources.append({"file": p.name, "path": str(p), "bytes": p.stat().st_size, "sha256": sha256_file(p)})


def raw_interactions(users, items, ratings=None, timestamps=None, split=None) -> pa.Table:
    """Assemble a raw interactions table; numpy or Arrow columns, keys may be ints or strings."""
    n = len(users)
    cols = {
        "user": pa.array(users),
        "item": pa.array(items),
        "rating": pa.nulls(n, pa.float32()) if ratings is None else pa.array(np.asarray(ratings, np.float32)),
        "timestamp": pa.nulls(n, pa.int64()) if timestamps is None else pa.array(timestamps, pa.int64()),
    }
    if split is not None:
        cols["split"] = pa.array(split, pa.string())
    return pa.table(cols)


def check_known_ids(
    path: Path, column: str, ids: np.ndarray, known: np.ndarray, known_file: str, lines: np.ndarray | None = None
) -> None:
    """Ids out of range: every id in ``ids`` must be among ``known`` (listed in ``known_file``).

    ``lines``: the line number of each row; without it the error names the row."""
    missing = ~np.isin(ids, known)
    if missing.any():
        row = int(np.argmax(missing))
        msg = f"{column} {ids[row]} is not listed in {known_file} ({int(missing.sum())} rows with unknown {column}s)"
        if lines is None:
            raise DataFormatError(path, f"{msg}, first at row {row + 1}")
        raise DataFormatError(path, msg, int(lines[row]))


def category_table(keys, genre_lists: list[list[str]], titles=None, vocabulary: list[str] | None = None):
    """Item attribute table (``item``, ``categories`` list<int32>[, ``title``]) and the category names."""
    names = vocabulary or sorted({g for gs in genre_lists for g in gs})
    index = {g: i for i, g in enumerate(names)}
    cols = {
        "item": pa.array(keys),
        "categories": pa.array([[index[g] for g in gs] for gs in genre_lists], pa.list_(pa.int32())),
    }
    if titles is not None:
        cols["title"] = pa.array(titles, pa.string())
    return pa.table(cols), names
