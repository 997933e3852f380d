"""Streaming training batches and images from prepared Parquet through Ray Data into torch.

Determinism: the rows arrive in file order; each epoch permutes them within windows of
``shuffle_window`` rows (seeded by seed, epoch and window), and negatives come from a counter-based
hash of (seed, epoch, user, item, slot, attempt). Neither depends on how Ray splits the data into
blocks, so the Ray Data path and the in-memory path yield identical batches for the same seed.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import torch
from PIL import Image

from distrec.data.dataset import PreparedDataset
from distrec.data.matrix import UserItemCSR, contains

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser, element-wise on uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _hash(*parts) -> np.ndarray:
    h = np.uint64(0)
    for p in parts:
        with np.errstate(over="ignore"):
            h = splitmix64(np.asarray(h, np.uint64) ^ np.asarray(p).astype(np.uint64))
    return h


def positive_keys(users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    """Sorted ``user * n_items + item`` keys: membership tests for negative sampling."""
    return np.unique(users.astype(np.int64) * n_items + items.astype(np.int64))


def sample_negatives(
    users: np.ndarray,
    items: np.ndarray,
    pos_keys: np.ndarray,
    n_items: int,
    num_negatives: int,
    seed: int,
    epoch: int,
    max_attempts: int = 64,
) -> np.ndarray:
    """Uniform negatives ``[n, num_negatives]`` that are not among the user's positives (rejection sampling).

    A user who has interacted with every item cannot get a negative: that raises ``ValueError``."""
    users = users.astype(np.int64)
    out = np.empty((len(users), num_negatives), np.int64)
    slot = np.arange(num_negatives, dtype=np.int64)[None, :]
    todo = np.ones(out.shape, bool)
    for attempt in range(max_attempts):
        h = _hash(seed, epoch, users[:, None], items[:, None], slot, attempt)
        cand = (h % np.uint64(n_items)).astype(np.int64)
        keys = users[:, None] * n_items + cand
        hit = contains(pos_keys, keys)
        write = todo & ~hit
        out[write] = cand[write]
        todo &= hit
        if not todo.any():
            return out
    row = int(np.argwhere(todo)[0, 0])
    raise ValueError(
        f"no negative item found for user {users[row]} after {max_attempts} attempts (has the user seen every item?)"
    )


def add_negatives(
    batch: dict[str, np.ndarray], pos_keys: np.ndarray, n_items: int, num_negatives: int, seed: int, epoch: int
) -> dict[str, np.ndarray]:
    """``map_batches`` function: adds ``neg_item`` ``[n, num_negatives]`` to a batch of (user_id, item_id)."""
    neg = sample_negatives(batch["user_id"], batch["item_id"], pos_keys, n_items, num_negatives, seed, epoch)
    return {"user_id": batch["user_id"], "item_id": batch["item_id"], "neg_item": neg}


def _windowed_batches(
    chunks: Iterator[dict[str, np.ndarray]], batch_size: int, seed: int, epoch: int, shuffle: bool
) -> Iterator[dict[str, torch.Tensor]]:
    """Permute each window-sized chunk (seeded per window) and cut the stream into ``batch_size`` batches."""
    carry: dict[str, np.ndarray] | None = None
    for w, chunk in enumerate(chunks):
        if shuffle:
            perm = np.random.default_rng([seed, epoch, w]).permutation(len(chunk["user_id"]))
            chunk = {k: v[perm] for k, v in chunk.items()}
        if carry is not None:
            chunk = {k: np.concatenate([carry[k], chunk[k]]) for k in chunk}
        n = len(chunk["user_id"])
        full = n - n % batch_size
        for s in range(0, full, batch_size):
            yield {k: torch.from_numpy(np.ascontiguousarray(v[s : s + batch_size])) for k, v in chunk.items()}
        carry = {k: v[full:] for k, v in chunk.items()} if full < n else None
    if carry is not None:
        yield {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in carry.items()}


SAMPLINGS = ("interaction", "user")


class InteractionStream:
    """Training batches ``{user_id, item_id, neg_item}`` (torch int64) from one split of a prepared dataset.

    ``backend``: ``ray`` streams the Parquet through Ray Data (negatives sampled in parallel
    ``map_batches`` tasks), ``memory`` reads the table once into numpy, ``auto`` picks memory below
    ``memory_rows`` rows. Both give the same batches for the same seed and epoch.

    ``sampling``: ``interaction`` visits every row once per epoch; ``user`` (LightGCN's official
    sampler) draws as many rows per epoch, each a user drawn uniformly among the users with a row and
    one of that user's items drawn uniformly, so every user weighs the same in the loss, as in a
    per-user metric (memory backend only).
    """

    def __init__(
        self,
        dataset: PreparedDataset | str,
        split: str = "train",
        batch_size: int = 2048,
        num_negatives: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        shuffle_window: int = 1 << 20,
        backend: str = "auto",
        memory_rows: int = 5_000_000,
        sampling: str = "interaction",
    ):
        self.dataset = dataset if isinstance(dataset, PreparedDataset) else PreparedDataset(dataset)
        self.split, self.batch_size, self.num_negatives, self.seed = split, batch_size, num_negatives, seed
        self.shuffle, self.shuffle_window = shuffle, shuffle_window
        table = self.dataset.table(split, columns=["user_id", "item_id"])
        self.num_rows = table.num_rows
        if backend == "auto":
            backend = "memory" if self.num_rows <= memory_rows else "ray"
        if backend not in ("ray", "memory"):
            raise ValueError(f"backend must be 'ray', 'memory' or 'auto', got {backend!r}")
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
        if sampling == "user" and backend != "memory":
            raise ValueError("sampling='user' draws rows at random and needs backend='memory'")
        self.backend, self.sampling = backend, sampling
        self.n_items = self.dataset.n_items
        users, items = table.column("user_id").to_numpy(), table.column("item_id").to_numpy()
        self.pos_keys = positive_keys(users, items, self.n_items)
        self._arrays = {"user_id": users, "item_id": items} if backend == "memory" else None
        if sampling == "user":
            self._csr = UserItemCSR.from_arrays(users, items, self.dataset.n_users, self.n_items)
            self._active = np.flatnonzero(self._csr.degrees())

    def __len__(self) -> int:
        return -(-self.num_rows // self.batch_size)

    def _user_uniform_rows(self, epoch: int) -> dict[str, np.ndarray]:
        """``num_rows`` (user, item) rows: users uniform among those with a row, then an item of theirs."""
        rng = np.random.default_rng([self.seed, epoch, 1])
        users = self._active[rng.integers(0, len(self._active), self.num_rows)]
        rows = self._csr.indptr[users] + (rng.random(self.num_rows) * self._csr.degrees()[users]).astype(np.int64)
        return {"user_id": users, "item_id": self._csr.indices[rows]}

    def _chunks_memory(self, epoch: int) -> Iterator[dict[str, np.ndarray]]:
        arrays = self._user_uniform_rows(epoch) if self.sampling == "user" else self._arrays
        for s in range(0, self.num_rows, self.shuffle_window):
            chunk = {k: v[s : s + self.shuffle_window] for k, v in arrays.items()}
            yield add_negatives(chunk, self.pos_keys, self.n_items, self.num_negatives, self.seed, epoch)

    def _chunks_ray(self, epoch: int) -> Iterator[dict[str, np.ndarray]]:
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        if self.dataset.fs is None:  # held in memory (object store)
            ds = ray.data.from_arrow(self.dataset.table(self.split, ["user_id", "item_id"]))
        else:
            ds = ray.data.read_parquet(self.dataset.path(self.split), filesystem=self.dataset.fs).select_columns(
                ["user_id", "item_id"]
            )
        ds = ds.map_batches(
            add_negatives,
            fn_kwargs={
                "pos_keys": self.pos_keys,
                "n_items": self.n_items,
                "num_negatives": self.num_negatives,
                "seed": self.seed,
                "epoch": epoch,
            },
            batch_format="numpy",
            batch_size=65536,
        )
        yield from ds.iter_batches(batch_size=self.shuffle_window, batch_format="numpy", prefetch_batches=1)

    def epoch(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        """The batches of one epoch; the same ``epoch`` always gives the same batches."""
        chunks = self._chunks_memory(epoch) if self.backend == "memory" else self._chunks_ray(epoch)
        return _windowed_batches(chunks, self.batch_size, self.seed, epoch, self.shuffle)


def decode_images(batch: dict[str, np.ndarray], size: int | None = None, mode: str = "RGB") -> dict[str, np.ndarray]:
    """``map_batches`` function: decode the ``image`` bytes to ``uint8 [n, H, W, C]`` (resized to ``size``)."""
    arrays = []
    for i, blob in enumerate(batch["image"]):
        try:
            with Image.open(io.BytesIO(blob)) as im:
                im = im.convert(mode)
                if size is not None and im.size != (size, size):
                    im = im.resize((size, size), Image.BILINEAR)
                arr = np.asarray(im, np.uint8)
        except OSError as exc:
            key = next((batch[k][i] for k in ("item_id", "image_id") if k in batch), i)
            raise ValueError(f"image of id {key} cannot be decoded: {exc}") from None
        arrays.append(arr if arr.ndim == 3 else arr[:, :, None])
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"images of different sizes {sorted(shapes)[:3]} in one batch; pass size=")
    out = {k: v for k, v in batch.items() if k != "image"}
    out["pixels"] = np.stack(arrays) if arrays else np.zeros((0, 0, 0, 0), np.uint8)
    return out


def image_dataset(
    dataset: PreparedDataset | str, table: str = "item_images", size: int | None = None, mode: str = "RGB"
):
    """A Ray Dataset of decoded images (``pixels`` uint8 ``[H, W, C]`` per row) read from Parquet;
    decoding happens lazily in ``map_batches``."""
    import ray.data

    dataset = dataset if isinstance(dataset, PreparedDataset) else PreparedDataset(dataset)
    ds = ray.data.read_parquet(dataset.path(table), filesystem=dataset.fs)
    return ds.map_batches(decode_images, fn_kwargs={"size": size, "mode": mode}, batch_format="numpy")


def pixels_to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """``uint8 [n, H, W, C]`` -> float ``[n, C, H, W]`` in [0, 1]."""
    return torch.from_numpy(np.array(pixels, np.float32)).permute(0, 3, 1, 2).div_(255.0)


__all__ = [
    "InteractionStream",
    "add_negatives",
    "decode_images",
    "image_dataset",
    "pixels_to_tensor",
    "sample_negatives",
]
