"""SASRec training cost on Amazon Beauty (2 layers, dim 64, max length 50, batch 256, BCE with one negative
per position), measured side by side in one run:

  python bench/sasrec.py [--repeats 3] [--threads 2] [--batching tokens] [--accuracy-epochs 40]

- ``reference``: the textbook PyTorch SASRec written here (dense attention: explicit Q/K/V projections, a
  masked softmax, pre-LayerNorm blocks, a point-wise feed-forward), its negatives drawn per position in a
  Python loop that rejects the user's items, as the common public implementation does;
- ``distrec sasrec``: ``distrec.models.sasrec`` (``nn.TransformerEncoderLayer``'s fused attention, padded
  keys masked, batches cut to their longest sequence, ``--batching tokens``: length-grouped batches of about
  256 x the mean length positions; vectorised rejection sampling).
Each run trains one full epoch from the same initial state; seconds per epoch, median of ``--repeats``, and
the peak RSS of the process. ``--accuracy-epochs N`` then trains both from scratch for N epochs and prints
the valid HR@10 / NDCG@10 (full ranking, history masked) every ``--eval-every`` epochs with the seconds so
far: equal accuracy at equal epochs is what makes the epoch times comparable. Results are recorded in
docs/benchmarks.md."""

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
from distrec.data.matrix import UserItemCSR
from distrec.data.spec import DatasetSpec, materialise_dataset
from distrec.metrics.ranking import full_ranking_metrics
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
        torch.nn.init.normal_(self.item.weight, std=0.02)  # as distrec's (the N(0, 1) default barely learns)
        torch.nn.init.normal_(self.pos.weight, std=0.02)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def encode(self, inputs):
        keep = (inputs > 0)[..., None]
        x = self.drop(self.item(inputs) * self.dim**0.5 + self.pos.weight[None, : inputs.shape[1]]) * keep
        for block in self.blocks:
            x = block(x) * keep
        return self.ln(x)

    def loss(self, inputs, pos, neg):
        x = self.encode(inputs)
        mask = pos > 0
        p, n = (x * self.item(pos)).sum(-1)[mask], (x * self.item(neg)).sum(-1)[mask]
        return F.binary_cross_entropy_with_logits(p, torch.ones_like(p)) + F.binary_cross_entropy_with_logits(
            n, torch.zeros_like(n)
        )


def reference_epoch(model: Reference, opt, seqs: list[np.ndarray], n_items: int, batch_size: int, rng) -> None:
    """One epoch of the textbook loop: per user, inputs / positives / a rejected-sampled negative per position."""
    model.train()
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
        inputs, pos, neg = (
            left_padded([q[:-1] for q in batch], 50),
            left_padded([q[1:] for q in batch], 50),
            left_padded(negs, 50),
        )
        opt.zero_grad(set_to_none=True)
        model.loss(inputs, pos, neg).backward()
        opt.step()


def distrec_epoch(data, seed: int, batching: str) -> None:
    model = create_victim("sasrec", data.n_users, data.n_items, epochs=1, seed=seed, batching=batching)
    model.fit(data, progress=False)


def valid_metrics(data, score) -> dict:
    """Full-ranking HR@10 / NDCG@10 of the valid item after the train sequence, train items masked."""
    seen = UserItemCSR.from_table(data.table("train"), data.n_users, data.n_items)
    truth = UserItemCSR.from_table(data.table("valid"), data.n_users, data.n_items)
    with torch.no_grad():
        m = full_ranking_metrics(score, seen, truth, (10,))
    return {"hr@10": round(m["hr@10"], 4), "ndcg@10": round(m["ndcg@10"], 4)}


def reference_curve(data, seqs, epochs: int, every: int) -> list[dict]:
    """Valid metrics every ``every`` epochs and the seconds so far (training and evaluation)."""
    torch.manual_seed(0)
    model, rng = Reference(data.n_items), np.random.default_rng(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = Sequences.history(data, ("train",)).lookup()
    empty = np.zeros(0, np.int64)

    def score(users):
        x = model.encode(left_padded([history.get(int(u), empty) for u in users.tolist()], 50))[:, -1]
        return x @ model.item.weight[1:].T

    curve, t0 = [], time.perf_counter()
    for epoch in range(epochs):
        reference_epoch(model, opt, seqs, data.n_items, 256, rng)
        if (epoch + 1) % every == 0:
            model.eval()
            curve.append(
                {"epoch": epoch + 1, **valid_metrics(data, score), "seconds": round(time.perf_counter() - t0, 1)}
            )
    return curve


def distrec_curve(data, epochs: int, every: int, batching: str) -> list[dict]:
    """The same record from ``fit``'s own validation (no early stopping)."""
    model = create_victim(
        "sasrec",
        data.n_users,
        data.n_items,
        epochs=epochs,
        eval_every=every,
        patience=epochs,
        seed=0,
        batching=batching,
    )
    curve, t0 = [], time.perf_counter()

    def on_epoch(record):
        if "valid_hr@10" in record:
            curve.append(
                {
                    "epoch": record["epoch"] + 1,
                    "hr@10": round(record["valid_hr@10"], 4),
                    "ndcg@10": round(record["valid_ndcg@10"], 4),
                    "seconds": round(time.perf_counter() - t0, 1),
                }
            )

    model.fit(data, "valid", progress=False, on_epoch=on_epoch)
    return curve


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=["reference", "distrec"], help="time one of the two (for its own peak RSS)")
    ap.add_argument("--batching", default="tokens", choices=["users", "tokens"], help="distrec's batching")
    ap.add_argument("--accuracy-epochs", type=int, default=0, help="then train both N epochs, valid HR@10 curve")
    ap.add_argument("--eval-every", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    spec = DatasetSpec(
        format="sequence",
        root=str(shared_data() / "sequential/s3rec/Beauty.txt"),
        prepare={"split": "loo", "valid_ratio": 0.1, "seed": 0},
    )
    data = InMemoryDataset.load(PreparedDataset(materialise_dataset(spec, "runs/bench_sasrec").uri))
    seqs = [s for s in Sequences.history(data, ("train",)).items if len(s) >= 2]
    times = {k: [] for k in ([args.only] if args.only else ["reference", "distrec"])}
    for r in range(args.repeats):
        for name in (
            [args.only] if args.only else (("reference", "distrec") if r % 2 == 0 else ("distrec", "reference"))
        ):
            torch.manual_seed(r)
            t0 = time.perf_counter()
            if name == "reference":
                model = Reference(data.n_items)
                reference_epoch(
                    model,
                    torch.optim.Adam(model.parameters(), lr=1e-3),
                    seqs,
                    data.n_items,
                    256,
                    np.random.default_rng(r),
                )
            else:
                distrec_epoch(data, r, args.batching)
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(machine())
    print({k: [round(x, 1) for x in v] for k, v in times.items()})
    print(
        "median s/epoch:",
        {k: round(v, 1) for k, v in med.items()},
        f"distrec / reference {med['distrec'] / med['reference']:.2f}x" if len(med) == 2 else "",
    )
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB", flush=True)
    if args.accuracy_epochs:
        for name in [args.only] if args.only else ["reference", "distrec"]:
            curve = (
                reference_curve(data, seqs, args.accuracy_epochs, args.eval_every)
                if name == "reference"
                else distrec_curve(data, args.accuracy_epochs, args.eval_every, args.batching)
            )
            print(name, "valid curve:", curve, flush=True)


if __name__ == "__main__":
    main()
