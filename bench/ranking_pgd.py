"""Ranking-PGD throughput against torchattacks' PGD on the same model, batch and steps.

  pip install --no-deps torchattacks==3.5.1   # its metadata pins requests 2.25, which Ray cannot use
  python bench/ranking_pgd.py [--model runs/advrank_mnist/models/undefended-*/model] [--repeats 5]

Both attack the c2f2 embedding network on a batch of 1000 MNIST test images with eps 0.3, alpha 0.01,
30 steps, no random start. Ours minimises the CA+ (w = 1) and SP-QA+ (m = 1) objectives over the full
10,000-image candidate pool; torchattacks' PGD maximises cross-entropy with the embedding read as
logits (labels: the clean argmax). Runs alternate, the first of each round rotating; medians are reported.
Results are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import torch
from common import machine, shared_data

from distrec.attacks.ranking import RankPGD, build_objective, parse_attack, select_trials
from distrec.data.readers.images import read_idx_file
from distrec.models.embedding import Embedder, create_embedder

warnings.filterwarnings("ignore")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model",
        help="a trained embedder folder (default: a seeded untrained c2f2; throughput does not depend on the weights)",
    )
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--objectives", default="CA+,SP-QA+", help="our objectives to time (comma-separated)")
    args = ap.parse_args()
    try:
        import torchattacks
    except ImportError:
        raise SystemExit(
            "this benchmark compares with torchattacks: pip install --no-deps torchattacks==3.5.1"
        ) from None

    images = (
        torch.from_numpy(read_idx_file(shared_data() / "mnist" / "t10k-images-idx3-ubyte.gz").copy())[:, None].float()
        / 255
    )
    torch.manual_seed(0)
    model = Embedder.load(args.model) if args.model else create_embedder("c2f2")
    model.eval()
    with torch.no_grad():
        pool = torch.cat([model(images[i : i + 1000]) for i in range(0, len(images), 1000)])
    x, rows = images[: args.batch], torch.arange(args.batch)
    labels = pool[rows].argmax(1)
    eps, alpha = 0.3, 0.01

    def ours(attack: str):
        spec = parse_attack(attack)
        trials = select_trials(spec, pool, rows, 1, model.metric, torch.Generator().manual_seed(0))
        objective = build_objective(spec, pool, trials, model.metric)
        return lambda: RankPGD(model, eps, alpha, args.steps)(x, objective)

    peer_attack = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=args.steps, random_start=False)
    runs = {f"distrec RankPGD {name} (k=1)": ours(name) for name in args.objectives.split(",") if name}
    runs["torchattacks PGD (CE)"] = lambda: peer_attack(x, labels)
    seconds = {name: [] for name in runs}
    names = list(runs)
    for r in range(args.repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate who goes first
            fn = runs[name]
            t0 = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - t0)
    result = {
        "machine": machine(),
        "torch_threads": torch.get_num_threads(),
        "batch": args.batch,
        "steps": args.steps,
        "repeats": args.repeats,
        "images_per_second": {name: round(args.batch / statistics.median(s), 1) for name, s in seconds.items()},
        "seconds": {name: [round(v, 3) for v in s] for name, s in seconds.items()},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
