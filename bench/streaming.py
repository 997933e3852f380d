"""Streaming throughput (interactions/s into torch batches with one sampled negative) on a prepared
dataset: distrec's Ray Data path and in-memory path against a plain numpy loop over the same Parquet,
measured in one run. Usage: python bench/streaming.py [--dataset gowalla] [--epochs 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import pyarrow.parquet as pq
import torch
from common import machine, recipes, shared_data

from distrec.data.dataset import prepare, write_prepared
from distrec.data.preprocess import PrepareConfig
from distrec.data.readers import read_source
from distrec.data.streaming import InteractionStream
from distrec.distributed.runtime import init_ray


def plain_numpy_epochs(path: str, n_items: int, batch_size: int, epochs: int):
    """The peer: read the Parquet with pyarrow, shuffle with numpy, reject positives with searchsorted."""
    table = pq.read_table(path, columns=["user_id", "item_id"])
    users, items = table.column("user_id").to_numpy(), table.column("item_id").to_numpy()
    keys = np.unique(users * n_items + items)
    rng = np.random.default_rng(0)
    for _ in range(epochs):
        t0 = time.perf_counter()
        perm = rng.permutation(len(users))
        for s in range(0, len(perm), batch_size):
            idx = perm[s : s + batch_size]
            u = users[idx]
            neg = rng.integers(0, n_items, len(idx))
            while True:
                probe = u * n_items + neg
                hit = keys[np.minimum(np.searchsorted(keys, probe), len(keys) - 1)] == probe
                if not hit.any():
                    break
                neg[hit] = rng.integers(0, n_items, hit.sum())
            batch = {
                "user_id": torch.from_numpy(u),
                "item_id": torch.from_numpy(items[idx]),
                "neg_item": torch.from_numpy(neg),
            }
        del batch
        yield time.perf_counter() - t0


def timed_epochs(stream: InteractionStream, epochs: int):
    for e in range(epochs):
        t0 = time.perf_counter()
        n = sum(len(b["user_id"]) for b in stream.epoch(e))
        assert n == stream.num_rows
        yield time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="gowalla")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=2048)
    args = parser.parse_args()
    recipe = recipes()[args.dataset]
    init_ray(num_cpus=2)
    with tempfile.TemporaryDirectory() as tmp:
        raw = read_source(recipe["format"], shared_data() / recipe["root"])
        ds = write_prepared(*prepare(raw, PrepareConfig(**recipe["prepare"]), recipe["format"]), f"{tmp}/ds")
        rows = ds.metadata["tables"]["train"]["rows"]
        print(
            f"machine: {machine()}; {args.dataset} train split: {rows:,} interactions, batch {args.batch_size}, "
            f"{args.epochs} epochs each"
        )
        results = {
            "ray data": list(
                timed_epochs(InteractionStream(ds, batch_size=args.batch_size, backend="ray"), args.epochs)
            ),
            "in-memory": list(
                timed_epochs(InteractionStream(ds, batch_size=args.batch_size, backend="memory"), args.epochs)
            ),
            "plain numpy loop": list(plain_numpy_epochs(ds.path("train"), ds.n_items, args.batch_size, args.epochs)),
        }
    for name, secs in results.items():
        med = statistics.median(secs)
        print(
            f"{name:>17}: median {med:.2f}s/epoch = {rows / med:,.0f} interactions/s (epochs "
            f"{', '.join(f'{s:.2f}' for s in secs)})"
        )


if __name__ == "__main__":
    main()
