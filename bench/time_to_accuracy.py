"""Time to accuracy of the SGD-trained victims on a CPU budget: test Recall@20 against training seconds
(evaluation time excluded), up to a wall-clock budget, for the configs of a YAML plan.

  python bench/time_to_accuracy.py --plan configs/victims/time_to_accuracy.yaml [--only ml-1m:lightgcn] \
      [--budget-s 600] [--out docs/results/time_to_accuracy.json]

Each cell runs in a fresh process; the plan maps data -> label -> {victim, config, budget_s, eval_every}. A cell's
record holds its curve and the first second at which it reached 95% of the plan's ``converged`` value
for that data and victim (a long run recorded once, in the same file); a cell stopped early (killed,
interrupted) keeps the curve it reached, marked ``stopped``. Results go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import yaml
from common import REPO, machine

warnings.filterwarnings("ignore", category=FutureWarning)


class Budget(Exception):
    """Raised from the epoch callback when the training seconds pass the budget."""


def one_cell(data_name: str, victim: str, config: str, budget_s: float, eval_every: int = 1) -> None:
    from victims import csrs, dataset

    from distrec.metrics.ranking import full_ranking_metrics
    from distrec.models import create_victim
    from distrec.models.trainer import EarlyStopping

    ds = dataset(data_name)
    train, test = csrs(ds)
    cfg = {"epochs": 10_000, **json.loads(config)}  # a cell's own epochs (a cosine schedule's length) stop it early
    model = create_victim(victim, ds.n_users, ds.n_items, **cfg)
    curve, clock = [], {"start": time.perf_counter(), "eval": 0.0}

    def on_epoch(record):
        t_eval = time.perf_counter()
        trained = t_eval - clock["start"] - clock["eval"]
        if not EarlyStopping.due(record["epoch"], cfg["epochs"], eval_every) and trained < budget_s:
            return
        m = full_ranking_metrics(model.score, train, test, (20,))
        curve.append(
            {
                "epoch": record["epoch"] + 1,
                "train_seconds": round(trained, 1),
                "recall@20": m["recall@20"],
                "ndcg@20": m["ndcg@20"],
                "loss": record["loss"],
            }
        )
        print(json.dumps(curve[-1]), file=sys.stderr, flush=True)
        clock["eval"] += time.perf_counter() - t_eval
        if trained >= budget_s:
            raise Budget

    with contextlib.suppress(Budget):
        model.fit(ds, progress=False, on_epoch=on_epoch)
    print(
        json.dumps(
            {"data": data_name, "victim": victim, "config": json.loads(config), "budget_s": budget_s, "curve": curve}
        )
    )


def seconds_to(curve: list[dict], value: float) -> float | None:
    """The first training second at which the curve reached ``value``."""
    return next((p["train_seconds"] for p in curve if p["recall@20"] >= value), None)


def run(plan_file: str, only: list[str] | None, budget_s: float | None, out: str | None) -> None:
    plan = yaml.safe_load((REPO / plan_file).read_text())
    path = Path(out) if out else None
    results = json.loads(path.read_text())["cells"] if path and path.exists() else {}
    for data_name, cells in plan["cells"].items():
        for label, cell in cells.items():
            key = f"{data_name}:{label}"
            if only and key not in only:
                continue
            limit = budget_s or cell.get("budget_s", 600)
            cmd = [
                sys.executable,
                __file__,
                "--cell",
                data_name,
                cell["victim"],
                json.dumps(cell["config"]),
                str(limit),
                str(cell.get("eval_every", 1)),
            ]
            status, last_line, points = stream_cell(cmd)
            if status == 0:
                results[key] = json.loads(last_line)
            elif points:  # stopped early (killed, interrupted, out of memory): its curve so far is kept
                results[key] = {
                    "data": data_name,
                    "victim": cell["victim"],
                    "config": cell["config"],
                    "budget_s": limit,
                    "curve": points,
                    "stopped": f"exit status {status}",
                }
                print(f"{key}: stopped with exit status {status} after {len(points)} evaluations; their curve is kept")
            else:
                print(f"{key}: failed with exit status {status} (its stderr is above)")
                continue
            report(key, results[key], plan.get("converged", {}).get(data_name, {}).get(cell["victim"]))
            if path:
                path.write_text(json.dumps({"machine": machine(), "plan": plan_file, "cells": results}, indent=1))
            if status == INTERRUPTED:
                raise KeyboardInterrupt


INTERRUPTED = -2


def stream_cell(cmd: list[str]) -> tuple[int, str, list[dict]]:
    """Runs one cell in a child process, echoing its stderr: (exit status, or INTERRUPTED on Ctrl-C; its
    last stdout line; the curve points it streamed, which survive the cell being stopped early)."""
    points = []
    with (
        tempfile.TemporaryFile("w+") as stdout,
        subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=REPO / "bench") as proc,
    ):
        try:
            for line in proc.stderr:
                sys.stderr.write(line)
                with contextlib.suppress(json.JSONDecodeError):
                    point = json.loads(line)
                    if isinstance(point, dict) and "recall@20" in point:
                        points.append(point)
            status = proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait()
            status = INTERRUPTED
        stdout.seek(0)
        lines = stdout.read().strip().splitlines()
    return status, lines[-1] if lines else "", points


def report(key: str, r: dict, converged: float | None) -> None:
    curve = r["curve"]
    best = max(p["recall@20"] for p in curve)
    reach = seconds_to(curve, 0.95 * converged) if converged else None
    points = ", ".join(f"{p['train_seconds']:.0f}s {p['recall@20']:.4f}" for p in curve[:: max(1, len(curve) // 8)])
    to95 = (
        f"95% of {converged:.4f} at {reach:.0f}s"
        if reach is not None
        else f"95% of {converged} not reached"
        if converged
        else "no converged value"
    )
    print(
        f"{key}: {len(curve)} epochs, last {curve[-1]['recall@20']:.4f}, best {best:.4f}; {to95} | {points}", flush=True
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", default="configs/victims/time_to_accuracy.yaml")
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--budget-s", type=float)
    parser.add_argument("--out")
    parser.add_argument("--cell", nargs="+", help=argparse.SUPPRESS)  # data victim config budget_s [eval_every]
    a = parser.parse_args()
    if a.cell:
        one_cell(a.cell[0], a.cell[1], a.cell[2], float(a.cell[3]), int(a.cell[4]) if len(a.cell) > 4 else 1)
    else:
        run(a.plan, a.only, a.budget_s, a.out)


if __name__ == "__main__":
    main()
