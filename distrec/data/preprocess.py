"""Deterministic preprocessing: implicit threshold, k-core filtering, id remapping and splits."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from distrec.config import HalfOpenShare, NonNegativeInt
from distrec.data.schema import interactions_table

SPLIT_METHODS = ("auto", "given", "ratio", "loo", "temporal", "none")


@dataclass(frozen=True)
class PrepareConfig:
    """How a raw dataset becomes a prepared one; every step is deterministic given ``seed``.

        ``split``: ``given`` (the source's), ``ratio`` (per-user random ``test_ratio`` / ``valid_ratio``),
        ``loo`` (leave-one-out by time: last item to test, the one before to valid if ``valid_ratio`` > 0;
        without timestamps, in an order drawn with ``seed``: split method ``loo_random``), ``temporal``
        (global cut by timestamp), ``none`` (all train), ``auto`` (given if the source has one; leave-one-out for
    time-ordered sequence files, which are made for it; else ratio).
        ``test_negatives``: for each test user, that many items the user never interacted with, drawn once
        with ``seed`` and stored as the ``test_negatives`` table, so every model is scored on the same
        candidates (the NCF protocol: 99).
    """

    implicit_threshold: float | None = None
    kcore: NonNegativeInt = 0
    split: Literal[SPLIT_METHODS] = "auto"
    test_ratio: HalfOpenShare = 0.2
    valid_ratio: HalfOpenShare = 0.0
    test_negatives: NonNegativeInt = 0
    seed: int = 0

    def __post_init__(self):
        if self.test_ratio + self.valid_ratio >= 1:
            raise ValueError(f"test_ratio + valid_ratio must be below 1, got {self.test_ratio} + {self.valid_ratio}")

    def to_dict(self) -> dict:
        return asdict(self)


def kcore_mask(users: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """Rows kept by iterative k-core filtering: every kept user and item has at least ``k`` kept rows."""
    keep = np.ones(len(users), bool)
    if k <= 1:
        return keep
    while True:
        u_counts = np.bincount(users[keep], minlength=users.max() + 1 if len(users) else 0)
        i_counts = np.bincount(items[keep], minlength=items.max() + 1 if len(items) else 0)
        new = keep & (u_counts[users] >= k) & (i_counts[items] >= k)
        if new.sum() == keep.sum():
            return new
        keep = new


def build_id_map(keys: pa.Array, universe: pa.Table | None) -> tuple[pa.Table, np.ndarray]:
    """Map source keys to contiguous internal ids.

    Returns the id map (``original``, ``internal``) and the internal id of every key. With a
    ``universe`` (``key``, ``original``) the internal id is its row; otherwise distinct keys are sorted
    (numerically for integer keys), so ids already 0..n-1 keep their values.
    """
    if universe is None:
        distinct = pc.unique(keys).sort()
        table = pa.table({"key": distinct, "original": distinct})
    else:
        table = universe
    index = pc.index_in(keys, value_set=table.column("key").combine_chunks())
    if index.null_count:
        row = int(np.argmax(pc.is_null(index).to_numpy(zero_copy_only=False)))
        raise ValueError(f"id {keys[row].as_py()!r} is not in the dataset's id list")
    internal = np.arange(table.num_rows, dtype=np.int64)
    id_map = pa.table({"original": table.column("original").combine_chunks(), "internal": pa.array(internal)})
    return id_map, index.to_numpy().astype(np.int64)


def restrict_id_map(id_map: pa.Table, used_ids: np.ndarray) -> tuple[pa.Table, np.ndarray]:
    """Keep only ``used_ids`` and renumber them contiguously in their existing order.

    Returns the new map and ``renumber`` (old internal id -> new id, -1 where dropped)."""
    used = np.zeros(id_map.num_rows, bool)
    used[used_ids] = True
    renumber = np.where(used, np.cumsum(used) - 1, -1)
    table = pa.table(
        {
            "original": id_map.column("original").filter(pa.array(used)),
            "internal": pa.array(np.arange(used.sum(), dtype=np.int64)),
        }
    )
    return table, renumber


def _rank_within_user(users: np.ndarray, order_key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: its 0-based rank among its user's rows by ``order_key`` (ties by row), and the user's count."""
    order = np.lexsort((np.arange(len(users)), order_key, users))
    counts = np.bincount(users, minlength=users.max() + 1 if len(users) else 0)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(users), np.int64)
    rank[order] = np.arange(len(users)) - starts[users[order]]
    return rank, counts[users]


def split_rows(
    users: np.ndarray, timestamps: np.ndarray | None, given: np.ndarray | None, ordered: bool, config: PrepareConfig
) -> tuple[np.ndarray, str]:
    """Assign each row to ``0`` train, ``1`` valid or ``2`` test; returns the labels and the method used."""
    method = config.split
    if method == "auto":
        method = "given" if given is not None else "loo" if ordered else "ratio"
    n = len(users)
    label = np.zeros(n, np.int8)
    if method == "none":
        return label, method
    if method == "given":
        if given is None:
            raise ValueError("split=given, but the source has no split; use ratio, loo or temporal")
        return given.astype(np.int8), method
    if method == "ratio":
        rng = np.random.default_rng(config.seed)
        rank, count = _rank_within_user(users, rng.random(n))
        n_test = np.floor(count * config.test_ratio + 0.5).astype(np.int64)
        n_valid = np.floor(count * config.valid_ratio + 0.5).astype(np.int64)
        # a user keeps at least one training interaction
        n_test = np.minimum(n_test, count - 1)
        n_valid = np.minimum(n_valid, count - 1 - n_test)
        label[rank < n_test] = 2
        label[(rank >= n_test) & (rank < n_test + n_valid)] = 1
        return label, method
    if method == "loo" and timestamps is None and not ordered:
        method, timestamps = "loo_random", np.random.default_rng(config.seed).permutation(n)
    if timestamps is None and not ordered:
        raise ValueError(
            f"split={method} needs timestamps (or a time-ordered source such as sequence files); this source has none"
        )
    key = np.zeros(n, np.int64) if timestamps is None else timestamps
    if method in ("loo", "loo_random"):
        rank, count = _rank_within_user(users, key)
        from_end = count - 1 - rank
        label[(from_end == 0) & (count >= 2)] = 2
        if config.valid_ratio > 0:
            label[(from_end == 1) & (count >= 3)] = 1
        return label, method
    order = np.lexsort((np.arange(n), key))
    n_test = int(np.floor(n * config.test_ratio + 0.5))
    n_valid = int(np.floor(n * config.valid_ratio + 0.5))
    label[order[n - n_test :]] = 2
    label[order[n - n_test - n_valid : n - n_test]] = 1
    return label, method


def sample_test_negatives(
    users: np.ndarray, items: np.ndarray, test_users: np.ndarray, n_items: int, count: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` distinct items per test user that the user has no interaction with (in any split),
    uniformly at random with ``seed``: the candidates of the sampled (NCF) protocol."""
    rng = np.random.default_rng(seed)
    order = np.argsort(users, kind="stable")
    bounds = np.searchsorted(users[order], np.arange(users.max() + 2 if len(users) else 1))
    test_users = np.unique(test_users)
    out = np.empty((len(test_users), count), np.int64)
    for row, u in enumerate(test_users):
        seen = items[order[bounds[u] : bounds[u + 1]]]
        if n_items - len(np.unique(seen)) < count:
            raise ValueError(
                f"test_negatives: user {u} has only {n_items - len(np.unique(seen))} items it never interacted with, "
                f"fewer than {count}"
            )
        picked = np.empty(0, np.int64)
        while len(picked) < count:
            draw = rng.integers(0, n_items, 2 * count)
            picked = np.concatenate([picked, draw[~np.isin(draw, seen)]])
            picked = picked[np.sort(np.unique(picked, return_index=True)[1])]
        out[row] = picked[:count]
    return test_users, out


def build_sequences(table: pa.Table, use_row_order: bool) -> pa.Table:
    """Per-user item sequences in time order (timestamp, then row order) from interactions."""
    from distrec.data.schema import SEQUENCES

    users = table.column("user_id").to_numpy()
    ts_col = table.column("timestamp")
    has_ts = ts_col.null_count == 0 and not use_row_order
    ts = ts_col.to_numpy() if has_ts else np.zeros(len(users), np.int64)
    order = np.lexsort((np.arange(len(users)), ts, users))
    u_sorted = users[order]
    bounds = np.flatnonzero(np.diff(u_sorted)) + 1
    offsets = np.concatenate([[0], bounds, [len(order)]]).astype(np.int32)
    items = pa.ListArray.from_arrays(pa.array(offsets), pa.array(table.column("item_id").to_numpy()[order]))
    times = (
        pa.ListArray.from_arrays(pa.array(offsets), pa.array(ts[order]))
        if has_ts
        else pa.nulls(len(offsets) - 1, pa.list_(pa.int64()))
    )
    return pa.Table.from_arrays([pa.array(u_sorted[offsets[:-1]]), items, times], schema=SEQUENCES)


def to_interactions(users, items, ratings, ts_col: pa.ChunkedArray, rows: np.ndarray) -> pa.Table:
    ts = ts_col.take(pa.array(rows)).combine_chunks() if len(rows) else pa.array([], pa.int64())
    valid = ~ts.is_null().to_numpy(zero_copy_only=False)
    values = ts.fill_null(0).to_numpy() if ts.null_count else ts.to_numpy()
    return interactions_table(users[rows], items[rows], ratings[rows], values, timestamp_valid=valid)
