"""Ray engine benchmarks.

  python bench/engine.py cells        # evaluation cells: in-process vs one victim actor vs two (cells per hour,
                                      # parallel efficiency, Ray overhead per cell), on the synthetic dataset
  python bench/engine.py population   # population SharpAP on ML-1M: seconds per outer step vs P, and the
                                      # T-HR@20 of the crafted poison on held-out victims vs P
Results are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings

import numpy as np
import ray
from common import machine

from distrec.data.dataset import InMemoryDataset, PreparedDataset, prepare, write_prepared
from distrec.data.preprocess import PrepareConfig
from distrec.data.synthetic import make_synthetic
from distrec.distributed.runtime import init_ray
from distrec.distributed.victim_actor import VictimHost, victim_actor

warnings.filterwarnings("ignore")

CELL_VICTIMS = {"bpr": {"dim": 32, "epochs": 15, "lr": 0.01, "batch_size": 1024, "backend": "memory"}, "lightgcn": {"dim": 32, "layers": 2, "epochs": 8, "lr": 0.01, "batch_size": 2048, "backend": "memory"}}


def cells(repeats: int = 3, seeds: int = 4) -> None:
    tmp = tempfile.mkdtemp()
    tables, meta = prepare(make_synthetic(seed=0), PrepareConfig(seed=0), "synthetic")
    data = InMemoryDataset.load(write_prepared(tables, meta, f"{tmp}/data"))
    todo = [{"id": f"{v}-{s}", "victim": v, "seed": s, "config": dict(cfg, seed=s)} for v, cfg in CELL_VICTIMS.items() for s in range(seeds)]
    targets, n_real = [1, 2, 3], data.n_users
    init_ray(num_cpus=2)
    ref = ray.put(data)
    host = VictimHost()
    times = {"in-process": [], "1 actor": [], "2 actors": []}
    for _ in range(repeats):
        t0 = time.perf_counter()
        for c in todo:
            host.run_cell(c, data, targets, n_real)
        times["in-process"].append(time.perf_counter() - t0)
        for n in (1, 2):
            actors = [victim_actor(1, 0) for _ in range(n)]
            ray.get([a.__ray_ready__.remote() for a in actors])  # actor start-up is paid once per study
            t0 = time.perf_counter()
            ray.get([actors[i % n].run_cell.remote(c, ref, targets, n_real) for i, c in enumerate(todo)])
            times[f"{n} actor{'s' if n > 1 else ''}"].append(time.perf_counter() - t0)
            for a in actors:
                ray.kill(a)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"machine: {machine()}; {len(todo)} cells (bpr 15 epochs, lightgcn 8 epochs, synthetic 1000 x 400), median of {repeats}")
    print("| run | wall s (median) | runs | cells / hour | per cell s |")
    print("|---|---|---|---|---|")
    for k, v in times.items():
        print(f"| {k} | {med[k]:.1f} | {', '.join(f'{x:.1f}' for x in v)} | {3600 * len(todo) / med[k]:.0f} | {med[k] / len(todo):.2f} |")
    print(f"Ray overhead per cell (1 actor vs in-process): {(med['1 actor'] - med['in-process']) / len(todo):.3f} s = {100 * (med['1 actor'] / med['in-process'] - 1):.1f}%")
    print(f"parallel efficiency, 2 actors on 2 cores: {med['1 actor'] / (2 * med['2 actors']):.2f}")
    ray.shutdown()


def population(steps: int = 8, sizes=(1, 2, 4)) -> None:
    from victims import dataset

    from distrec.workflows.attack import evaluate_attack, run_attack

    ds = dataset("ml-1m")
    threat = {"target_bucket": "torso", "outer_steps": steps, "lr": 2.0}
    victims = {"bpr": {"dim": 64, "epochs": 10, "lr": 0.005, "batch_size": 4096}, "lightgcn": {"dim": 64, "layers": 3, "epochs": 4, "lr": 0.005, "batch_size": 8192}}
    init_ray(num_cpus=2)
    print(f"machine: {machine()}; ML-1M, RevAdv {steps} outer steps, WRMF surrogate (als), members share 2 cores")
    print("| P | craft s | s / outer step | T-HR@20 bpr | T-HR@20 lightgcn |")
    print("|---|---|---|---|---|")
    cache: dict = {}
    rows = [("plain revadv", None)] + [(str(p), {"members": [{"kind": "sam", "rho": 0.05}] + [{"kind": "random", "rho": 0.05, "seed": i} for i in range(1, p)], "member_cpus": 2 / p}) for p in sizes]
    for label, pop in rows:
        out = tempfile.mkdtemp()
        r = run_attack("revadv", PreparedDataset(ds.uri), "wrmf", pop is not None, threat, f"{out}/p", progress=False, population=pop)
        ev = evaluate_attack(f"{out}/p", list(victims), [0], victims, progress=False, clean_cache=cache)
        step = np.median([h["seconds"] for h in r["history"]])
        print(f"| {label} | {r['craft_seconds']:.0f} | {step:.1f} | {100 * ev['victims']['bpr']['t_hr@20']:.2f} | {100 * ev['victims']['lightgcn']['t_hr@20']:.2f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["cells", "population"])
    a = ap.parse_args()
    {"cells": cells, "population": population}[a.what]()


if __name__ == "__main__":
    main()
