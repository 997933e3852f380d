"""Attack benchmarks on ML-1M implicit pairs (per-user 80/20, seed 0).

  python bench/attacks.py revadv-resources   # RevAdv seconds per outer step and peak RSS, per surrogate
                                             # gradient mode, plain and with SharpAP (fresh process each)
Results are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import warnings

from common import REPO, machine
from victims import dataset

from distrec.attacks import SharpAP, create_attack
from distrec.attacks.base import AttackContext
from distrec.attacks.budget import ThreatModel, resolve_budget, select_targets
from distrec.attacks.surrogates import WRMFSurrogate
from distrec.data.matrix import UserItemCSR
from distrec.memory import peak_rss_mb

warnings.filterwarnings("ignore")


def one_run(mode: str, sharpap: bool, steps: int) -> dict:
    ds = dataset("ml-1m")
    train = UserItemCSR.from_table(ds.table("train"), ds.n_users, ds.n_items)
    threat = ThreatModel(target_bucket="torso")
    budget = resolve_budget(threat, train)
    ctx = AttackContext(train, select_targets(threat, train), budget, progress=False)
    attack = create_attack("revadv", outer_steps=steps, lr=2.0)
    if sharpap:
        attack = SharpAP(attack, rho=0.05)
    attack.craft(ctx, WRMFSurrogate(train, budget.n_fake, gradient=mode))
    seconds = [h["seconds"] for h in attack.history]
    return {
        "mode": mode,
        "sharpap": sharpap,
        "steps": len(seconds),
        "median_step_seconds": statistics.median(seconds),
        "step_seconds": seconds,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def revadv_resources(steps: int = 3) -> None:
    print(f"machine: {machine()}; ML-1M, 60 fake users x 132 items, 5 torso targets, WRMF surrogate dim 64")
    print("| surrogate gradient | SharpAP | s / outer step (median) | peak RSS |")
    print("|---|---|---|---|")
    for mode, sharp in (("als", False), ("als", True), ("unroll", False), ("unroll", True)):
        out = subprocess.run(
            [sys.executable, __file__, "_run", mode, str(int(sharp)), str(steps)],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"| {mode} | {'yes' if sharp else 'no'} | {r['median_step_seconds']:.2f} "
            f"({', '.join(f'{s:.2f}' for s in r['step_seconds'])}) | {r['peak_rss_mb'] / 1024:.2f} GB |",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["revadv-resources", "_run"])
    ap.add_argument("args", nargs="*")
    a = ap.parse_args()
    if a.what == "_run":
        print(json.dumps(one_run(a.args[0], bool(int(a.args[1])), int(a.args[2]))))
    else:
        revadv_resources()


if __name__ == "__main__":
    main()
