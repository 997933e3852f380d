"""Compressed per-user item lists (CSR) built from interaction tables."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch


@dataclass(frozen=True)
class UserItemCSR:
    """``indices[indptr[u]:indptr[u+1]]`` are user ``u``'s items (sorted, duplicates kept once);
    ``values``, when given, holds the summed values of each (user, item) entry."""

    indptr: np.ndarray
    indices: np.ndarray
    n_items: int
    values: np.ndarray | None = None

    @classmethod
    def from_arrays(
        cls, users: np.ndarray, items: np.ndarray, n_users: int, n_items: int, values: np.ndarray | None = None
    ) -> UserItemCSR:
        keys = users.astype(np.int64) * n_items + items.astype(np.int64)
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        first = np.ones(len(keys), bool)
        first[1:] = keys[1:] != keys[:-1]
        summed = None
        if values is not None:
            summed = (
                np.add.reduceat(np.asarray(values)[order], np.flatnonzero(first)) if len(keys) else np.asarray(values)
            )
        keys = keys[first]
        u, i = keys // n_items, keys % n_items
        indptr = np.zeros(n_users + 1, np.int64)
        np.cumsum(np.bincount(u, minlength=n_users), out=indptr[1:])
        return cls(indptr, i, n_items, summed)

    @classmethod
    def from_table(cls, table: pa.Table, n_users: int, n_items: int) -> UserItemCSR:
        return cls.from_arrays(table.column("user_id").to_numpy(), table.column("item_id").to_numpy(), n_users, n_items)

    @property
    def n_users(self) -> int:
        return len(self.indptr) - 1

    def keys(self) -> np.ndarray:
        """``user * n_items + item`` of every entry, sorted (for membership tests by binary search)."""
        return np.repeat(np.arange(self.n_users, dtype=np.int64), self.degrees()) * self.n_items + self.indices

    def degrees(self) -> np.ndarray:
        return np.diff(self.indptr)

    def rows(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(row, item)`` pairs of the given users, ``row`` indexing into ``users``."""
        starts, ends = self.indptr[users], self.indptr[users + 1]
        lengths = ends - starts
        row = np.repeat(np.arange(len(users)), lengths)
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return row, self.indices[np.repeat(starts, lengths) + offsets]


def contains(sorted_keys, probe):
    """Whether each ``probe`` key is among ``sorted_keys`` (binary search); both torch tensors or both
    numpy arrays, the answer of the same kind."""
    if len(sorted_keys) == 0:
        return probe != probe  # all False, of the probe's kind and shape (integer keys)
    search = torch.searchsorted if isinstance(sorted_keys, torch.Tensor) else np.searchsorted
    return sorted_keys[search(sorted_keys, probe).clip(max=len(sorted_keys) - 1)] == probe
