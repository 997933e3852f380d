"""SASRec training cost on Amazon Beauty (2 layers, dim 64, max length 50, batch 256, BCE with one negative
per position), measured side by side in one run:

  python bench/sasrec.py [--repeats 3] [--threads 2]

- ``reference``: the textbook PyTorch SASRec written here (dense attention: explicit Q/K/V projections, a
  masked softmax, pre-LayerNorm blocks, a point-wise feed-forward), its negatives drawn per position in a
  Python loop that rejects the user's items, as the common public implementation does;
- ``distrec sasrec``: ``distrec.models.sasrec`` (``nn.TransformerEncoderLayer``'s fused attention,
  vectorised rejection sampling).
Each run trains one full epoch from the same initial state; seconds per epoch, median of ``--repeats``, and
the peak RSS of the process. Results are recorded in docs/benchmarks.md."""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from common import machine, shared_data

from distrec.data.dataset import InMemoryDataset, PreparedDataset
from distrec.data.spec import DatasetSpec, materialise_dataset
from distrec.models import create_victim
from distrec.models.sasrec import Sequences, left_padded


class ReferenceBlock(torch.nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (torch.nn.Linear(dim, dim) for _ in range(4))
        self.ln1, self.ln2 = torch.nn.LayerNorm(dim), torch.nn.LayerNorm(dim)
        self.ff1, self.ff2 = torch.nn.Linear(dim, dim), torch.nn.Linear(dim, dim)
        self.drop = torch.nn.Dropout(dropout)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        b, length, dim = x.shape
        split = lambda t: t.reshape(b, length, self.heads, dim // self.heads).transpose(1, 2)
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = q @ k.transpose(-1, -2) / (dim // self.heads) ** 0.5
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool), 1)
        weights = self.drop(torch.softmax(scores.masked_fill(causal, float("-inf")), -1))
        return self.o((weights @ v).transpose(1, 2).reshape(b, length, dim))

    def forward(self, x):
        x = x + self.drop(self.attention(self.ln1(x)))
        return x + self.drop(self.ff2(self.drop(F.relu(self.ff1(self.ln2(x))))))


class Reference(torch.nn.Module):
    def __init__(self, n_items: int, dim=64, layers=2, heads=2, dropout=0.5, max_len=50):
        super().__init__()
        self.item = torch.nn.Embedding(n_items + 1, dim, padding_idx=0)
        self.pos = torch.nn.Embedding(max_len, dim)
        self.blocks = torch.nn.ModuleList(ReferenceBlock(dim, heads, dropout) for _ in range(layers))
        self.ln, self.drop, self.dim = torch.nn.LayerNorm(dim), torch.nn.Dropout(dropout), dim

    def loss(self, inputs, pos, neg):
        keep = (inputs > 0)[..., None]
        x = self.drop(self.item(inputs) * self.dim**0.5 + self.pos.weight[None, : inputs.shape[1]]) * keep
        for block in self.blocks:
            x = block(x) * keep
        x = self.ln(x)
        mask = pos > 0
        p, n = (x * self.item(pos)).sum(-1)[mask], (x * self.item(neg)).sum(-1)[mask]
        return F.binary_cross_entropy_with_logits(p, torch.ones_like(p)) + F.binary_cross_entropy_with_logits(n, torch.zeros_like(n))


def reference_epoch(model: Reference, seqs: list[np.ndarray], n_items: int, batch_size: int, seed: int) -> None:
    """One epoch of the textbook loop: per user, inputs / positives / a rejected-sampled negative per position."""
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = rng.permutation(len(seqs))
    for s in range(0, len(order), batch_size):
        batch = [seqs[i] for i in order[s : s + batch_size]]
        negs = []
        for seq in batch:
            seen = set(seq.tolist())
            row = []
            for _ in seq[1:]:
                t = int(rng.integers(n_items))
                while t in seen:
                    t = int(rng.integers(n_items))
                row.append(t)
            negs.append(np.asarray(row, np.int64))
        inputs, pos, neg = left_padded([q[:-1] for q in batch], 50), left_padded([q[1:] for q in batch], 50), left_padded(negs, 50)
        opt.zero_grad(set_to_none=True)
        model.loss(inputs, pos, neg).backward()
        opt.step()


def distrec_epoch(data, seed: int) -> None:
    model = create_victim("sasrec", data.n_users, data.n_items, epochs=1, seed=seed)
    model.fit(data, progress=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=["reference", "distrec"], help="time one of the two (for its own peak RSS)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    spec = DatasetSpec(format="sequence", root=str(shared_data() / "sequential/s3rec/Beauty.txt"), prepare={"split": "loo", "valid_ratio": 0.1, "seed": 0})
    data = InMemoryDataset.load(PreparedDataset(materialise_dataset(spec, "runs/bench_sasrec").uri))
    seqs = [s for s in Sequences.history(data, ("train",)).items if len(s) >= 2]
    times = {k: [] for k in ([args.only] if args.only else ["reference", "distrec"])}
    for r in range(args.repeats):
        for name in [args.only] if args.only else (("reference", "distrec") if r % 2 == 0 else ("distrec", "reference")):
            torch.manual_seed(r)
            t0 = time.perf_counter()
            if name == "reference":
                reference_epoch(Reference(data.n_items), seqs, data.n_items, 256, r)
            else:
                distrec_epoch(data, r)
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(machine())
    print({k: [round(x, 1) for x in v] for k, v in times.items()})
    print("median s/epoch:", {k: round(v, 1) for k, v in med.items()}, f"distrec / reference {med['distrec'] / med['reference']:.2f}x" if len(med) == 2 else "")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
