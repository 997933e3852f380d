"""Hyperparameter sweeps of an attack with Ray Tune: Optuna's TPE sampler (``OptunaSearch``) proposes
configs, ASHA stops trials early on the running objective, and the Optuna study lives in a storage URL
(sqlite locally), so a rerun resumes it and optuna-dashboard can read it.

A trial crafts the attack with its config, then retrains each held-out victim for each seed on the
poisoned data; after every (victim, seed) cell it reports the running mean of ``objective.metric``,
the value ASHA compares across trials at equal numbers of cells.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from dataclasses import field
from pathlib import Path

import numpy as np
import optuna
import pydantic
import yaml
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from distrec.config import ConfigError, load_document
from distrec.data.dataset import InMemoryDataset, PreparedDataset
from distrec.data.spec import DatasetSpec, materialise_dataset
from distrec.distributed.runtime import init_ray
from distrec.study.scenarios.poisoning import FORBID, AttackSpec
from distrec.workflows.attack import run_attack, train_and_measure

DISTRIBUTIONS = {"loguniform": tune.loguniform, "uniform": tune.uniform, "int": tune.randint, "choice": tune.choice}


@pydantic.dataclasses.dataclass(config=FORBID)
class Dimension:
    """One searched key: ``type`` loguniform / uniform / int (``low`` <= x < ``high``) or choice (``values``)."""

    type: str
    low: float | None = None
    high: float | None = None
    values: list | None = None


@pydantic.dataclasses.dataclass(config=FORBID)
class SweepConfig:
    """``search``: keys of the attack config (threat-model keys, attack keys, SharpAP keys, ``surrogate.KEY``,
    or ``population_size``: a population of one SAM member and random-direction members) -> dimension."""

    dataset: DatasetSpec
    attack: AttackSpec
    victims: dict[str, dict]
    search: dict[str, Dimension]
    threat: dict = field(default_factory=dict)
    surrogate: dict = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    metric: str = "t_hr@20"
    mode: str = "max"
    num_samples: int = 8
    max_concurrent: int = 2
    trial_cpus: float = 1
    trial_gpus: float = 0
    storage: str | None = None
    study_name: str = "distrec-sweep"
    seed: int = 0


def load_sweep(path: str | Path) -> SweepConfig:
    cfg = load_document(SweepConfig, path)
    for key, dim in cfg.search.items():
        if dim.type not in DISTRIBUTIONS:
            raise ConfigError(f"{path}: key search.{key}.type: {dim.type!r} is not one of {sorted(DISTRIBUTIONS)}")
        if dim.type == "choice" and not dim.values or dim.type != "choice" and (dim.low is None or dim.high is None):
            raise ConfigError(f"{path}: key search.{key}: {dim.type} needs {'values' if dim.type == 'choice' else 'low and high'}")
    return cfg


def search_space(cfg: SweepConfig) -> dict:
    space = {}
    for key, dim in cfg.search.items():
        if dim.type == "choice":
            space[key] = tune.choice(dim.values)
        elif dim.type == "int":
            space[key] = tune.randint(int(dim.low), int(dim.high))
        else:
            space[key] = DISTRIBUTIONS[dim.type](dim.low, dim.high)
    return space


def attack_arguments(cfg: SweepConfig, params: dict) -> tuple[dict, dict | None, bool]:
    """The flat attack config, population and SharpAP switch of one trial."""
    params = dict(params)
    size = params.pop("population_size", None)
    config = dict(cfg.threat, **cfg.attack.config, **(cfg.attack.sharpap or {}))
    config.update({f"surrogate.{k}": v for k, v in cfg.surrogate.items()})
    config.update(params)
    population = dict(cfg.attack.population) if cfg.attack.population is not None else None
    if size is not None:
        rho = config.get("rho", 0.05)
        members = [{"kind": "sam", "rho": rho}] + [{"kind": "random", "rho": rho, "seed": i} for i in range(1, int(size))]
        population = dict(population or {}, members=members)
    sharpap = cfg.attack.sharpap is not None or population is not None
    return config, population, sharpap


def trial(params: dict, cfg: SweepConfig, data: InMemoryDataset) -> None:
    config, population, sharpap = attack_arguments(cfg, params)
    with tempfile.TemporaryDirectory() as tmp:
        crafted = run_attack(cfg.attack.name, data, "wrmf", sharpap, config, f"{tmp}/poisoned", progress=False, population=population)
        poisoned = PreparedDataset(f"{tmp}/poisoned")
        values = []
        for victim, vcfg in cfg.victims.items():
            for seed in cfg.seeds:
                m = train_and_measure(victim, poisoned, dict(vcfg, seed=seed), np.asarray(crafted["targets"]), data.n_users)
                values.append(m[cfg.metric])
                tune.report({"objective": float(np.mean(values)), f"{victim}/{seed}/{cfg.metric}": m[cfg.metric], "craft_seconds": crafted["craft_seconds"]})


def run_sweep(config_path: str | Path, out: str | Path, progress: bool = True, num_cpus: int | None = None) -> dict:
    """Run the sweep (or resume it: only the trials missing from the Optuna study run); writes
    ``sweep.json`` and ``best.yaml`` (the best attack config) to ``out``."""
    cfg = load_sweep(config_path)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    storage_url = cfg.storage or f"sqlite:///{out / 'optuna.db'}"
    storage = optuna.storages.RDBStorage(storage_url)
    done = 0
    try:
        study = optuna.load_study(study_name=cfg.study_name, storage=storage)
        done = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    except KeyError:
        pass
    remaining = max(cfg.num_samples - done, 0)
    t0 = time.perf_counter()
    if remaining:
        init_ray(num_cpus=num_cpus)
        data = InMemoryDataset.load(materialise_dataset(cfg.dataset, str(out)))
        n_cells = len(cfg.victims) * len(cfg.seeds)
        searcher = OptunaSearch(metric="objective", mode=cfg.mode, study_name=cfg.study_name, storage=storage, seed=cfg.seed)
        scheduler = ASHAScheduler(metric="objective", mode=cfg.mode, max_t=n_cells, grace_period=1, reduction_factor=2)
        trainable = tune.with_resources(tune.with_parameters(trial, cfg=cfg, data=data), {"cpu": cfg.trial_cpus, "gpu": cfg.trial_gpus})
        tuner = tune.Tuner(
            trainable,
            param_space=search_space(cfg),
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=remaining, max_concurrent_trials=cfg.max_concurrent),
            run_config=tune.RunConfig(name=cfg.study_name, storage_path=str(out / "tune"), verbose=1 if progress else 0),
        )
        tuner.fit()
    study = optuna.load_study(study_name=cfg.study_name, storage=storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value if cfg.mode == "max" else -t.value)
    config, population, sharpap = attack_arguments(cfg, best.params)
    best_spec = {"name": cfg.attack.name, "config": config, "sharpap": sharpap, "population": population, "objective": best.value, "metric": cfg.metric}
    (out / "best.yaml").write_text(yaml.safe_dump(best_spec, sort_keys=False))
    result = {
        "storage": storage_url,
        "study_name": cfg.study_name,
        "trials": [{"number": t.number, "params": t.params, "objective": t.value} for t in complete],
        "trials_run": remaining,
        "trials_skipped": done,
        "best": best_spec,
        "best_yaml": str(out / "best.yaml"),
        "seconds": round(time.perf_counter() - t0, 1),
        "config": dataclasses.asdict(cfg),
    }
    (out / "sweep.json").write_text(json.dumps(result, indent=2, default=str))
    return result
