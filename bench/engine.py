"""Ray engine benchmarks.

  python bench/engine.py cells        # poisoning cells: in-process vs the study engine on 1 and 2 Ray workers
                                      # (cells per hour, parallel efficiency, engine overhead per cell), synthetic data
  python bench/engine.py ranking      # ranking crafts + cells on MNIST, the same comparison
  python bench/engine.py hosts        # ranking crafts + cells on MNIST transferred to 3 victims: victim hosts
                                      # against a task per unit, on 2 Ray workers
  python bench/engine.py projection   # a study on a simulated 3-node cluster: its wall time against the one
                                      # projected from its own unit costs (distrec.study.projection)
  python bench/engine.py population   # population SharpAP on ML-1M: seconds per outer step vs P, and the
                                      # T-HR@20 of the crafted poison on held-out victims vs P
Results are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import ray
import torch
import yaml
from common import machine, shared_data

from distrec.data.dataset import PreparedDataset, prepare, write_prepared
from distrec.data.preprocess import PrepareConfig
from distrec.data.synthetic import make_synthetic
from distrec.distributed.runtime import init_ray
from distrec.study import load_study
from distrec.study.engine import UnitContext, execute

warnings.filterwarnings("ignore")

CELL_VICTIMS = {
    "bpr": {"dim": 32, "epochs": 40, "lr": 0.01, "batch_size": 1024, "backend": "memory"},
    "lightgcn": {"dim": 32, "layers": 2, "epochs": 15, "lr": 0.01, "batch_size": 2048, "backend": "memory"},
}


def _poisoning_study(tmp: str, seeds: int) -> str:
    data = f"{tmp}/data"
    write_prepared(
        *prepare(make_synthetic(n_users=3000, n_items=1000, seed=0), PrepareConfig(seed=0), "synthetic"), data
    )
    config = {
        "dataset": {"path": data},
        "threat": {"fake_ratio": 0.01, "n_targets": 3, "target_bucket": "torso"},
        "attacks": [{"name": "random"}],
        "victims": CELL_VICTIMS,
        "seeds": list(range(seeds)),
        "resources": {"craft": {"num_cpus": 1}, "cell": {"num_cpus": 1}},
    }
    Path(f"{tmp}/study.yaml").write_text(yaml.safe_dump(config))
    return f"{tmp}/study.yaml"


def _ranking_study(tmp: str) -> str:
    config = {
        "scenario": "ranking",
        "dataset": {"format": "idx", "root": str(shared_data() / "mnist")},
        "victims": {
            "c2f2": {"model": "c2f2", "model_config": {"embed_dim": 256}, "training": {"epochs": 1, "batch_size": 1000}}
        },
        "surrogates": ["c2f2"],
        "attacks": ["CA+", "CA-", "SP-QA+", "SP-QA-"],
        "eps": [0.03, 0.1],
        "ks": [1],
        "trials": 200,
        "batch_size": 200,
        "train_limit": 10000,
    }
    Path(f"{tmp}/ranking.yaml").write_text(yaml.safe_dump(config))
    return f"{tmp}/ranking.yaml"


def overhead(scenario, measured: tuple[str, ...], repeats: int) -> tuple[dict, int]:
    """Wall time of the ``measured`` stages' units in-process (one thread) and through the engine on 1
    and 2 Ray workers (one CPU each); the other stages run first, untimed, and are shared."""
    out = tempfile.mkdtemp()
    times = {"in-process": [], "engine, 1 worker": [], "engine, 2 workers": []}
    init_ray(num_cpus=2)
    units = scenario.plan(out)
    todo = [u for u in units if u.stage in measured]
    execute(scenario, [u for u in units if u.stage not in measured], out, {}, progress=False)
    ray.shutdown()
    for _ in range(repeats):
        for label, workers in (("in-process", 0), ("engine, 1 worker", 1), ("engine, 2 workers", 2)):
            for stage in measured:  # the measured units run again every time
                shutil.rmtree(f"{out}/{stage}", ignore_errors=True)
            if scenario.name == "poisoning":  # its cells restore checkpointed models: train them again
                shutil.rmtree(f"{out}/checkpoints", ignore_errors=True)
            UnitContext._cache.clear()  # in-process starts as cold as a fresh worker
            init_ray(num_cpus=max(1, workers))
            t0 = time.perf_counter()
            if workers == 0:
                torch.set_num_threads(1)
                results = {}
                for u in todo:  # in plan order: every dependency before its dependents
                    deps = {
                        k: results.get(v)
                        or json.loads(Path(f"{out}/{next(x.stage for x in units if x.id == v)}/{v}.json").read_text())
                        for k, v in u.deps.items()
                    }
                    results[u.id] = scenario.run(u, deps, UnitContext(out, u, 1))
                    Path(f"{out}/{u.stage}").mkdir(parents=True, exist_ok=True)
                    Path(f"{out}/{u.stage}/{u.id}.json").write_text(json.dumps(results[u.id], default=str))
            else:
                execute(scenario, units, out, {}, progress=False)
            times[label].append(time.perf_counter() - t0)
            ray.shutdown()
    n = len(todo)
    return times, n


def report(times: dict, n: int, what: str) -> None:
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"machine: {machine()}; {what}; median of {len(times['in-process'])}")
    print("| run | wall s (median) | runs | units / hour | per unit s |")
    print("|---|---|---|---|---|")
    for k, v in times.items():
        print(
            f"| {k} | {med[k]:.1f} | {', '.join(f'{x:.1f}' for x in v)} | {3600 * n / med[k]:.0f} | {med[k] / n:.2f} |"
        )
    base, one = med["in-process"], med["engine, 1 worker"]
    print(
        f"engine overhead per unit (1 worker vs in-process): {(one - base) / n:.3f} s = {100 * (one / base - 1):.1f}%"
    )
    print(f"parallel efficiency, 2 workers on 2 cores: {one / (2 * med['engine, 2 workers']):.2f}", flush=True)


def cells(repeats: int = 3, seeds: int = 3) -> None:
    """Poisoning cells (one victim trained and measured each) in-process vs through the engine."""
    scenario = load_study(_poisoning_study(tempfile.mkdtemp(), seeds))
    times, n = overhead(scenario, ("cell",), repeats)
    report(times, n, f"{n} poisoning cells (bpr 40 epochs, lightgcn 15 epochs, synthetic 3000 x 1000)")


def ranking(repeats: int = 3) -> None:
    """Ranking crafts (PGD on 200 MNIST images) and their cells, in-process vs through the engine."""
    scenario = load_study(_ranking_study(tempfile.mkdtemp()))
    times, n = overhead(scenario, ("craft", "cell"), repeats)
    report(
        times,
        n,
        f"{n} ranking units (8 crafts of 200 MNIST trials, eps 0.03 / 0.1, and their 8 cells; c2f2 trained on 10k "
        "images, untimed)",
    )


def hosts(repeats: int = 3) -> None:
    """Ranking units attacking 3 trained MNIST embedders: in their victim's host vs a Ray task per unit."""
    config = yaml.safe_load(Path(_ranking_study(tempfile.mkdtemp())).read_text())
    seeds = {f"c2f2_s{i}": {**config["victims"]["c2f2"], "training": {"epochs": 1, "batch_size": 1000, "seed": i}}
             for i in range(3)}  # fmt: skip
    config.update(victims=seeds, surrogates=["c2f2_s0"], trials=100, batch_size=100)
    config["resources"] = {stage: {"num_cpus": 1} for stage in ("train", "craft", "cell")}
    path = Path(tempfile.mkdtemp()) / "hosts.yaml"
    path.write_text(yaml.safe_dump(config))
    scenario = load_study(path)
    out = tempfile.mkdtemp()
    init_ray(num_cpus=2)
    units = scenario.plan(out)
    execute(scenario, [u for u in units if u.stage == "train"], out, scenario.config.resources, progress=False)
    ray.shutdown()
    measured = [u for u in units if u.stage != "train"]
    times = {"a task per unit": [], "victim hosts": []}
    for _ in range(repeats):
        for label in times:
            for stage in ("craft", "cell"):
                shutil.rmtree(f"{out}/{stage}", ignore_errors=True)
            init_ray(num_cpus=2)
            t0 = time.perf_counter()
            execute(scenario, units, out, scenario.config.resources, False, victim_hosts=label == "victim hosts")
            times[label].append(time.perf_counter() - t0)
            ray.shutdown()
    n = len(measured)
    print(f"machine: {machine()}; {n} ranking units (8 crafts on c2f2_s0, 24 cells on 3 victims), 2 Ray workers")
    print("| run | wall s (median) | runs | units / hour |")
    print("|---|---|---|---|")
    for label, runs in times.items():
        med = statistics.median(runs)
        print(f"| {label} | {med:.1f} | {', '.join(f'{x:.1f}' for x in runs)} | {3600 * n / med:.0f} |")


CLUSTER_RUN = """
import json, sys, time, ray
from ray.cluster_utils import Cluster
from distrec.study import run_study
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
for _ in range(NODES - 1):
    cluster.add_node(num_cpus=1)
ray.init(address=cluster.address, log_to_driver=False)
t0, start = time.perf_counter(), time.time()
run_study(sys.argv[1], sys.argv[2], progress=False)
print(json.dumps({"wall_s": time.perf_counter() - t0, "start": start, "end": time.time()}))
ray.shutdown()
cluster.shutdown()
"""


def projection(repeats: int = 2, nodes: int = 3) -> None:
    """A poisoning study (crafts, then cells) run on a simulated cluster of ``nodes`` 1-CPU nodes, against
    the wall time projected from the unit seconds the same run stored."""
    import subprocess
    import sys

    from distrec.study.engine import StageResources
    from distrec.study.projection import measured_seconds, project

    tmp = tempfile.mkdtemp()
    study = _poisoning_study(tmp, seeds=2)
    config = yaml.safe_load(Path(study).read_text())
    config["attacks"] = [{"name": "random"}, {"name": "bandwagon"}, {"name": "revadv", "config": {"outer_steps": 3}}]
    config["victims"] = {"bpr": dict(CELL_VICTIMS["bpr"], epochs=10), "wrmf": {"factors": 32, "iterations": 8}}
    Path(study).write_text(yaml.safe_dump(config))
    scenario = load_study(study)
    print(f"machine: {machine()}; a simulated cluster of {nodes} 1-CPU nodes on this machine's cores")
    print(
        "| run | units | measured wall s | of which before the first unit / after the last | projected wall s "
        "| projected / measured between first and last unit |"
    )
    print("|---|---|---|---|---|---|")
    for r in range(repeats):
        out = f"{tmp}/run{r}"
        script = CLUSTER_RUN.replace("NODES", str(nodes))
        proc = subprocess.run([sys.executable, "-c", script, study, out], capture_output=True, text=True, check=True)
        run = json.loads(proc.stdout.strip().splitlines()[-1])
        units = scenario.plan(out)
        stored = [json.loads(Path(f"{out}/{u.stage}/{u.id}.json").read_text()) for u in units]
        first = min(x["started"] for x in stored)
        last = max(x["started"] + x["unit_seconds"] for x in stored)
        p = project(units, measured_seconds(units, out), scenario.config.resources, [StageResources(1)] * nodes)
        print(
            f"| {r} | {p.units} | {run['wall_s']:.1f} | {first - run['start']:.1f} / {run['end'] - last:.1f} | "
            f"{p.wall_s:.1f} | {p.wall_s / (last - first):.2f} |",
            flush=True,
        )


def population(steps: int = 8, sizes=(1, 2, 4)) -> None:
    from victims import dataset

    from distrec.tasks.craft import run_attack
    from distrec.workflows.attack import evaluate_attack

    ds = dataset("ml-1m")
    threat = {"target_bucket": "torso", "outer_steps": steps, "lr": 2.0}
    victims = {
        "bpr": {"dim": 64, "epochs": 10, "lr": 0.005, "batch_size": 4096},
        "lightgcn": {"dim": 64, "layers": 3, "epochs": 4, "lr": 0.005, "batch_size": 8192},
    }
    init_ray(num_cpus=2)
    print(f"machine: {machine()}; ML-1M, RevAdv {steps} outer steps, WRMF surrogate (als), members share 2 cores")
    print("| P | craft s | s / outer step | T-HR@20 bpr | T-HR@20 lightgcn |")
    print("|---|---|---|---|---|")
    cache = tempfile.mkdtemp()
    rows = [("plain revadv", None)] + [
        (
            str(p),
            {
                "members": [{"kind": "sam", "rho": 0.05}]
                + [{"kind": "random", "rho": 0.05, "seed": i} for i in range(1, p)],
                "member_cpus": 2 / p,
            },
        )
        for p in sizes
    ]
    for label, pop in rows:
        out = tempfile.mkdtemp()
        r = run_attack(
            "revadv",
            PreparedDataset(ds.uri),
            "wrmf",
            pop is not None,
            threat,
            f"{out}/p",
            progress=False,
            population=pop,
        )
        ev = evaluate_attack(f"{out}/p", list(victims), [0], victims, progress=False, store=cache)
        step = np.median([h["seconds"] for h in r["history"]])
        print(
            f"| {label} | {r['craft_seconds']:.0f} | {step:.1f} | {100 * ev['victims']['bpr']['t_hr@20']:.2f} | "
            f"{100 * ev['victims']['lightgcn']['t_hr@20']:.2f} |",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["cells", "ranking", "hosts", "projection", "population"])
    a = ap.parse_args()
    {"cells": cells, "ranking": ranking, "hosts": hosts, "projection": projection, "population": population}[a.what]()


if __name__ == "__main__":
    main()
