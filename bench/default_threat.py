"""Which default threat model lets a gradient attack beat Random where a table can see it? Random vs
RevAdv (WRMF surrogate) over target buckets and fake-user ratios, victims retrained from scratch on clean
and poisoned data for two seeds; T-HR@10, T-HR@50, HitOne@50 and the mean target rank, each beside its
no-attack value.

  python bench/default_threat.py grid  [--data ml-100k-pairs]   # buckets tail/torso/any/head x 1% / 3% fakes,
                                                                # WRMF victim
  python bench/default_threat.py attacks [--data ml-1m]   # the default threat model, every attack, WRMF and
                                                          # MF-BPR victims

Results go to docs/benchmarks.md ("The default threat model").
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

from common import machine
from victims import dataset

from distrec.tasks.craft import run_attack
from distrec.workflows.attack import evaluate_attack

warnings.filterwarnings("ignore")
VICTIMS = {
    "wrmf": {"factors": 64, "iterations": 15},
    "bpr": {"dim": 64, "epochs": 10, "lr": 0.005, "batch_size": 4096, "reg": 0.0001},
}
ATTACKS = [("random", {}), ("bandwagon", {}), ("revadv", {}), ("revadv", {"lr": 2.0}), ("dada", {}), ("rapu", {})]


def cell(label: str, attack: str, data, config: dict, victims: dict, tmp: Path) -> None:
    crafted = run_attack(attack, data.uri, config=config, out=tmp / label, progress=False)
    ev = evaluate_attack(tmp / label, list(victims), [0, 1], victims, progress=False, store=tmp / "clean")
    for v, r in ev["victims"].items():
        pairs = [(f"{100 * r[m]:.2f}", f"{100 * r['clean_' + m]:.2f}") for m in ("t_hr@10", "t_hr@50", "hitone@50")]
        cells = " | ".join(f"{a} ({b})" for a, b in pairs)
        print(
            f"| {label} | {v} | {cells} | {r['mean_rank']:.0f} ({r['clean_mean_rank']:.0f}) | "
            f"{r['std']['t_hr@50'] * 100:.2f} | {crafted['craft_seconds']:.0f} |",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["grid", "attacks"])
    ap.add_argument("--data", default="ml-100k-pairs")
    a = ap.parse_args()
    data = dataset(a.data)
    print(f"machine: {machine()}; {a.data}; value after the attack (no attack), %; seeds 0, 1")
    print(
        "| attack | victim | T-HR@10 | T-HR@50 | HitOne@50 | mean target rank | std T-HR@50 | craft s "
        "|\n|---|---|---|---|---|---|---|---|"
    )
    with tempfile.TemporaryDirectory() as tmp:
        if a.what == "grid":
            for bucket in ("tail", "torso", "any", "head"):
                for ratio in (0.01, 0.03):
                    for name, extra in (("random", {}), ("revadv", {"outer_steps": 10, "lr": 2.0})):
                        config = {"target_bucket": bucket, "fake_ratio": ratio, "seed": 0, **extra}
                        cell(f"{name} {bucket} {ratio:.0%}", name, data, config, {"wrmf": VICTIMS["wrmf"]}, Path(tmp))
        else:
            for name, extra in ATTACKS:
                label = name + "".join(f" {k}={v}" for k, v in extra.items())
                cell(label, name, data, {"seed": 0, **extra}, VICTIMS, Path(tmp))


if __name__ == "__main__":
    main()
