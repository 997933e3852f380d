"""DeepCF MLP training cost on ML-1M (BCE, 4 negatives, batch 200), measured side by side in one run:

  python bench/deepcf.py [--batches 300] [--repeats 3]

- ``dense port``: the public PyTorch DeepCF port's model written faithfully here: the user's and the item's
  binary rows gathered from dense matrices and passed through ``nn.Linear(n_items, 512)`` / ``nn.Linear(n_users, 512)``;
- ``distrec deepcf``: the same network with embedding-bag inputs (O(nnz) per example);
- ``distrec deepcf + rawp``: the same with RAWP's weight perturbation (a second forward / backward per batch).
Seconds per epoch are extrapolated from ``--batches`` batches (after 5 untimed ones) (the epoch has one batch per
200 positives).
Results are recorded in docs/benchmarks.md."""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from common import machine
from victims import dataset

from distrec.data.streaming import InteractionStream
from distrec.defenses import create_defense
from distrec.models import create_victim


class DensePort(torch.nn.Module):
    """DeepCF's CFNet-ml as the public port builds it: dense rows through two Linear layers."""

    def __init__(self, matrix: torch.Tensor, tower=(512, 256, 128, 64, 32, 16)):
        super().__init__()
        self.matrix = matrix
        n_users, n_items = matrix.shape
        self.user = torch.nn.Linear(n_items, 512)
        self.item = torch.nn.Linear(n_users, 512)
        dims = [1024, *tower]
        self.tower = torch.nn.Sequential(
            *[m for a, b in zip(dims[:-1], dims[1:]) for m in (torch.nn.Linear(a, b), torch.nn.ReLU())]
        )
        self.out = torch.nn.Linear(dims[-1], 1)

    def loss(self, users, pos, neg):
        u = torch.cat([users, users.repeat_interleave(neg.shape[1])])
        i = torch.cat([pos, neg.reshape(-1)])
        x = torch.cat([self.user(self.matrix[u]), self.item(self.matrix[:, i].T)], 1)
        logits = self.out(self.tower(x)).squeeze(-1)
        labels = torch.cat([torch.ones(len(pos)), torch.zeros(neg.numel())])
        return F.binary_cross_entropy_with_logits(logits, labels)


def timed(model, stream, batches: int, step, warmup: int = 5) -> float:
    """Seconds for ``batches`` training steps after ``warmup`` untimed ones (allocator, first calls)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    for n, b in enumerate(stream.epoch(0)):
        if n == warmup:
            t0 = time.perf_counter()
        if n == warmup + batches:
            break
        opt.zero_grad(set_to_none=True)
        step(model, b["user_id"], b["item_id"], b["neg_item"])
        opt.step()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    ds = dataset("ml-1m")
    train = ds.table("train")
    users, items = train.column("user_id").to_numpy(), train.column("item_id").to_numpy()
    epoch_batches = int(np.ceil(len(users) / 200))
    stream = InteractionStream(ds, "train", batch_size=200, num_negatives=4, seed=0, backend="memory")
    matrix = torch.zeros(ds.n_users, ds.n_items)
    matrix[users, items] = 1
    plain = lambda m, u, p, n: m.loss(u, p, n).backward()  # noqa: E731
    defended = lambda m, u, p, n: m.objective.backward(m, u, p, n, 0)  # noqa: E731

    def ours(defense=None):
        m = create_victim("deepcf", ds.n_users, ds.n_items).attach(ds)
        return create_defense(defense, gamma=1e-3).apply(m) if defense else m

    runs = {
        "dense port": lambda: (DensePort(matrix), plain),
        "distrec deepcf": lambda: (ours(), plain),
        "distrec deepcf + rawp": lambda: (ours("rawp"), defended),
    }
    times = {k: [] for k in runs}
    torch.set_num_threads(2)
    for _ in range(a.repeats):
        for name, make in runs.items():  # rotating order, the same batches for all
            model, step = make()
            times[name].append(timed(model, stream, a.batches, step) / a.batches * epoch_batches)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"machine: {machine()}; ML-1M train split ({len(users):,} positives, {epoch_batches:,} batches of 200 + 4 "
        f"negatives each); {a.batches} batches timed, median of {a.repeats}"
    )
    print("| model | s / epoch (median, extrapolated) | runs |")
    print("|---|---|---|")
    for k, v in times.items():
        print(f"| {k} | {med[k]:.0f} | {', '.join(f'{x:.0f}' for x in v)} |")
    print(
        f"distrec / dense port: {med['distrec deepcf'] / med['dense port']:.3f}x; RAWP / plain: "
        f"{med['distrec deepcf + rawp'] / med['distrec deepcf']:.2f}x"
    )


if __name__ == "__main__":
    main()
