"""Transfer of RevAdv poison crafted with one WRMF surrogate, a WRMF-only population and a population of
mixed architectures (WRMF + MF-BPR + LightGCN surrogates), per victim; wall time per outer step vs P;
and RAPU vs RevAdv when the attacker holds an incomplete, perturbed copy of the data.

  python bench/cross_architecture.py [--data ml-100k-pairs] [--seeds 0 1] [--steps 10] \
      [--out docs/results/cross_architecture_ml100k.json]

Every victim is retrained from scratch on clean and poisoned data (evaluate_attack); the table shows the
preset's headline metric (T-HR@50) with the no-attack value, and the mean target rank. Results go to
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from common import machine
from victims import dataset

from distrec.distributed.runtime import init_ray
from distrec.tasks.craft import run_attack
from distrec.workflows.attack import evaluate_attack

warnings.filterwarnings("ignore")
VICTIMS = {
    "wrmf": {"factors": 64, "iterations": 15},
    "bpr": {"dim": 64, "epochs": 40, "lr": 0.005, "batch_size": 4096, "reg": 0.0001},
    "lightgcn": {"dim": 64, "layers": 3, "epochs": 60, "lr": 0.01, "batch_size": 8192, "reg": 0.0001},
}
SURROGATES = {
    "bpr": {"dim": 64, "steps": 300, "unroll_steps": 5, "batch_size": 8192, "lr": 0.01},
    "lightgcn": {"dim": 64, "steps": 200, "unroll_steps": 3, "batch_size": 8192, "lr": 0.01},
}


def populations(cpus: float) -> dict:
    wrmf_only = [
        {"kind": "sam", "rho": 0.05},
        {"kind": "random", "rho": 0.05, "seed": 1},
        {"kind": "plain", "surrogate": {"seed": 7}},
    ]
    mixed = [{"kind": "sam", "rho": 0.05}] + [
        {"kind": "plain", "architecture": a, "surrogate": c} for a, c in SURROGATES.items()
    ]
    softmax = {"combine": "softmax", "temperature": 1.0, "compare": "relative"}  # a mix, not the worst member alone
    return {
        "wrmf-only P=3": {"members": wrmf_only, "member_cpus": cpus},
        "mixed P=3": {"members": mixed, "member_cpus": cpus},
        "mixed P=2 (wrmf+bpr)": {"members": mixed[:2], "member_cpus": cpus},
        "wrmf-only P=2 softmax": {"members": [wrmf_only[0], wrmf_only[2]], "member_cpus": cpus, **softmax},
        "mixed P=2 (wrmf+bpr) softmax": {"members": mixed[:2], "member_cpus": cpus, **softmax},
    }


def row(label: str, attack: str, ds, config: dict, seeds, tmp: Path, population=None, sharpap=False) -> dict:
    out = tmp / label.replace(" ", "_").replace("/", "_")
    t0 = time.perf_counter()
    crafted = run_attack(
        attack, ds.uri, "wrmf", sharpap or population is not None, config, out, progress=False, population=population
    )
    ev = evaluate_attack(out, list(VICTIMS), seeds, VICTIMS, progress=False, store=tmp / "clean")
    steps = [h["seconds"] for h in crafted["history"]]
    result = {
        "craft_seconds": round(time.perf_counter() - t0, 1),
        "seconds_per_step": float(np.median(steps)) if steps else 0.0,
        "victims": {},
    }
    for v, r in ev["victims"].items():
        result["victims"][v] = {
            k: r[k]
            for k in ("t_hr@50", "clean_t_hr@50", "hitone@50", "clean_hitone@50", "mean_rank", "clean_mean_rank")
        } | {"std_t_hr@50": r["std"]["t_hr@50"]}
    cells = " | ".join(
        f"{r['t_hr@50'] * 100:.2f} ± {r['std_t_hr@50'] * 100:.2f} (rank {r['mean_rank']:.0f})"
        for r in result["victims"].values()
    )
    print(f"| {label} | {cells} | {result['seconds_per_step']:.1f} |", flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="ml-100k-pairs")
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument(
        "--rows", nargs="*", help="run only these rows (labels of the table); the others are kept from --out"
    )
    ap.add_argument("--out")
    a = ap.parse_args()
    ds = dataset(a.data)
    init_ray(num_cpus=2)
    base = {"outer_steps": a.steps, "lr": 2.0, "seed": 0}
    print(
        f"machine: {machine()}; {a.data}, 1% fake users, 5 torso targets, seeds {a.seeds}; T-HR@50 (%) after the "
        "attack (mean target rank)"
    )
    print("| attack | " + " | ".join(VICTIMS) + " | s / outer step |\n|---|" + "---|" * (len(VICTIMS) + 1))
    results = json.loads(Path(a.out).read_text())["rows"] if a.rows and a.out and Path(a.out).exists() else {}
    wanted = lambda label: not a.rows or label in a.rows  # noqa: E731
    plan = [("random", "random", {"seed": 0}, None), ("revadv@wrmf", "revadv", base, None)]
    plan += [(label, "revadv", base, pop) for label, pop in populations(2 / 3).items()]
    partial = {"knowledge": 0.5, "knowledge_noise": 0.2}
    plan += [(f"{name} partial", name, base | partial, None) for name in ("revadv", "rapu")]
    with tempfile.TemporaryDirectory() as tmp:
        for label, attack, config, pop in plan:
            if wanted(label):
                results[label] = row(label, attack, ds, config, a.seeds, Path(tmp), population=pop)
    clean = {v: r["clean_t_hr@50"] for v, r in results["random"]["victims"].items()}
    print(
        "no attack: "
        + ", ".join(f"{v} {100 * c:.2f}" for v, c in clean.items())
        + "; 'partial': the attacker holds half the interactions, a fifth of them moved"
    )
    if a.out:
        Path(a.out).write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "data": a.data,
                    "seeds": a.seeds,
                    "victims": VICTIMS,
                    "surrogates": SURROGATES,
                    "rows": results,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
