"""Sweeps of any study's keys with Ray Tune: Optuna's TPE sampler (``OptunaSearch``) proposes values for
dotted key paths of the base study (attack keys to maximise transfer to held-out victims, or defense
keys to minimise attack success), ASHA stops trials whose running objective lags, and the Optuna study
lives in a storage URL (sqlite locally), so a rerun resumes it and only the missing trials run.

Every trial is a study run by the engine; all trials share one unit store, so what a trial's keys do
not change (the clean data, the attacks of a defense sweep, the undefended columns) is computed once.
The objective is the mean ``objective.metric`` over the chosen rows and columns, reported after every
cell; a ``constraint`` bounds the loss of a clean metric (e.g. Recall@20 of the defended column against
the undefended one), and a trial that breaks it scores as the worst possible.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pyarrow.fs as pafs
import pydantic
import yaml
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from distrec.config import ConfigError, load_document
from distrec.content_id import content_id
from distrec.distributed import storage
from distrec.distributed.runtime import init_ray
from distrec.files import check_writable
from distrec.study.runner import check_resources, run_study, study_from_dict

FORBID = pydantic.ConfigDict(extra="forbid")
DISTRIBUTIONS = ("loguniform", "uniform", "int", "choice")


@pydantic.dataclasses.dataclass(config=FORBID)
class Dimension:
    """One searched key: ``type`` loguniform / uniform / int (``low`` <= x < ``high``) or choice (``values``)."""

    type: str
    low: float | None = None
    high: float | None = None
    values: list | None = None


@pydantic.dataclasses.dataclass(config=FORBID)
class Objective:
    """The mean ``metric`` over the cells of ``rows`` x ``columns`` (default: every row but the no-attack
    baseline, every column), to ``mode`` max or min."""

    metric: str
    mode: str = "max"
    rows: list[str] | None = None
    columns: list[str] | None = None


@pydantic.dataclasses.dataclass(config=FORBID)
class Constraint:
    """``metric`` of cell (``row``, ``column``) may drop at most ``max_drop`` below that of (``row``,
    ``reference``), mean over seeds: relative (0.03 = 3%), or in the metric's own units with ``absolute``
    (0.01 = one point of HR@10)."""

    metric: str
    column: str
    reference: str
    row: str = "no attack"
    max_drop: float = 0.01
    absolute: bool = False


@pydantic.dataclasses.dataclass(config=FORBID)
class SweepConfig:
    """``study``: the base study (a mapping, or the path of a study YAML); ``search``: dotted key path
    (``attacks.0.sharpap.rho``, ``defenses.apr.eps``) -> dimension. A trial only coordinates its study
    (``trial_cpus``, more than 0); its units take the study's own ``resources``."""

    study: dict | str
    search: dict[str, Dimension]
    objective: Objective
    constraint: Constraint | None = None
    num_samples: int = 8
    max_concurrent: int = 2
    trial_cpus: float = 0.1
    trial_gpus: float = 0
    storage: str | None = None
    study_name: str = "distrec-sweep"
    seed: int = 0


def set_path(config: dict, path: str, value) -> dict:
    """A copy of ``config`` with the key at dotted ``path`` (list items by index) set to ``value``."""
    out = copy.deepcopy(config)
    node, parts = out, path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if isinstance(node, list):
        node[int(parts[-1])] = value
    else:
        node[parts[-1]] = value
    return out


def _parent_exists(config: dict, path: str) -> bool:
    node = config
    for part in path.split(".")[:-1]:
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                return False
            node = node[int(part)]
        elif isinstance(node, dict) and isinstance(node.get(part), dict | list):
            node = node[part]
        else:
            return False
    return True


def base_study(cfg: SweepConfig, source: str) -> tuple[dict, str]:
    if isinstance(cfg.study, str):
        from distrec.config import load_yaml

        path = (
            cfg.study
            if Path(cfg.study).is_absolute()
            else str(Path(source).parent / cfg.study)
            if not Path(cfg.study).exists()
            else cfg.study
        )
        return load_yaml(path), path
    return dict(cfg.study), f"{source}: study"


def load_sweep(path: str | Path) -> tuple[SweepConfig, dict]:
    """The sweep config and its base study config, both checked: every dimension, every searched path
    and the study as it is and at each dimension's bounds, before anything runs."""
    cfg = load_document(SweepConfig, path)
    base, study_source = base_study(cfg, str(path))
    scenario = study_from_dict(base, study_source)
    for key, metric in (
        ("objective.metric", cfg.objective.metric),
        ("constraint.metric", cfg.constraint.metric if cfg.constraint else None),
    ):
        if metric is not None and metric not in scenario.metric_names():
            raise ConfigError(
                f"{path}: {key}: the study's cells do not report {metric!r}; they report "
                f"{', '.join(scenario.metric_names())}"
            )
    for key, dim in cfg.search.items():
        if dim.type not in DISTRIBUTIONS:
            raise ConfigError(f"{path}: search.{key}.type: {dim.type!r} is not one of {', '.join(DISTRIBUTIONS)}")
        if (
            dim.type == "choice"
            and not dim.values
            or dim.type != "choice"
            and (dim.low is None or dim.high is None or dim.low >= dim.high)
        ):
            raise ConfigError(
                f"{path}: search.{key}: {dim.type} needs {'values' if dim.type == 'choice' else 'low < high'}"
            )
        if not _parent_exists(base, key):
            raise ConfigError(
                f"{path}: search.{key}: the study has no {key.rsplit('.', 1)[0]!r} to set {key.rsplit('.', 1)[-1]!r} in"
            )
        for value in dim.values if dim.type == "choice" else [dim.low, dim.high if dim.type != "int" else dim.high - 1]:
            value = int(value) if dim.type == "int" else value
            try:
                study_from_dict(set_path(base, key, value), f"{path}: search.{key}={value!r}: {study_source}")
            except ConfigError as exc:
                raise ConfigError(str(exc)) from None
    if cfg.trial_cpus <= 0:
        raise ConfigError(
            f"{path}: trial_cpus: must be more than 0 (Ray Tune needs a resource per trial), got {cfg.trial_cpus}"
        )
    if cfg.objective.mode not in ("max", "min"):
        raise ConfigError(f"{path}: objective.mode: {cfg.objective.mode!r} is not max or min")
    return cfg, base


def search_space(cfg: SweepConfig) -> dict:
    make = {"loguniform": tune.loguniform, "uniform": tune.uniform}
    space = {}
    for key, dim in cfg.search.items():
        if dim.type == "choice":
            space[key] = tune.choice(dim.values)
        elif dim.type == "int":
            space[key] = tune.randint(int(dim.low), int(dim.high))
        else:
            space[key] = make[dim.type](dim.low, dim.high)
    return space


def trial_config(base: dict, params: dict) -> dict:
    config = base
    for key, value in params.items():
        config = set_path(config, key, value)
    return config


def _selected(cfg: SweepConfig, result: dict, baseline: str) -> bool:
    o = cfg.objective
    return (result["row"] in o.rows if o.rows else result["row"] != baseline) and (
        o.columns is None or result["column"] in o.columns
    )


def score(cfg: SweepConfig, cells: list[dict], baseline=lambda row: "no attack") -> tuple[float, dict]:
    """The objective of a finished trial and its constraint report (``baseline(row)``: the scenario's no-attack row)."""
    values = [c["metrics"][cfg.objective.metric] for c in cells if _selected(cfg, c, baseline(c["row"]))]
    objective = float(np.mean(values)) if values else float("nan")
    report = {}
    if cfg.constraint is not None:
        c = cfg.constraint
        mean = lambda col: float(
            np.mean([x["metrics"][c.metric] for x in cells if x["row"] == c.row and x["column"] == col])
        )  # noqa: E731
        value, reference = mean(c.column), mean(c.reference)
        drop = reference - value if c.absolute else (1 - value / reference if reference else 0.0)
        report = {"value": value, "reference": reference, "drop": drop}
        report["ok"] = report["drop"] <= c.max_drop
        if not report["ok"]:
            objective = -1e9 if cfg.objective.mode == "max" else 1e9
    return objective, report


def trial_folder(out: str, params: dict) -> str:
    """A trial's folder, named by the content id of its parameters (the same on every run)."""
    return f"{out}/trials/{content_id(params)}"


def trial(params: dict, cfg: SweepConfig, base: dict, store: str, out: str) -> None:
    config = trial_config(base, params)
    name = json.dumps(params, sort_keys=True, default=str)
    trial_out = trial_folder(out, params)
    values: list[float] = []

    scenario = study_from_dict(config, f"trial {name}")

    def on_result(unit, result):
        if unit.stage != "cell":
            return
        for cell in scenario.cells({unit.id: dict(result, stage=unit.stage)}):  # a unit may hold several cells
            if _selected(cfg, cell, scenario.baseline(cell["row"])):
                values.append(cell["metrics"][cfg.objective.metric])
                tune.report({"objective": float(np.mean(values)), "cells": len(values)})

    study = run_study(
        f"trial {name}", trial_out, progress=False, on_result=on_result, scenario=scenario, store=store, in_cluster=True
    )
    import pyarrow.parquet as pq

    fs, root = storage.resolve_uri(study["results"])
    cells = [dict(r, metrics=json.loads(r["metrics"])) for r in pq.read_table(root, filesystem=fs).to_pylist()]
    objective, constraint = score(cfg, cells, scenario.baseline)
    record = {"params": params, "objective": objective, "constraint": constraint, "cells": len(cells)}
    storage.write_text(
        f"{trial_out}/trial.json", json.dumps(record, indent=2, default=str)
    )  # only a trial that ran every cell
    tune.report({"objective": objective, "cells": len(cells), "constraint": json.dumps(constraint), "final": True})


def finished_trials(out: str) -> list[dict]:
    """The trials that ran every cell, with their final objective (a trial ASHA stopped early has only a
    running score over part of its cells, and never competes for best)."""
    fs, root = storage.resolve_uri(f"{out}/trials")
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        return []
    records = []
    for info in sorted(fs.get_file_info(pafs.FileSelector(root)), key=lambda i: i.base_name):
        uri = f"{out}/trials/{info.base_name}/trial.json"
        if info.type != pafs.FileType.Directory or not storage.exists(uri):
            continue
        try:
            records.append(json.loads(storage.read_text(uri)))
        except ValueError as exc:
            print(f"[distrec] discarded {uri}: unreadable JSON ({exc})", file=sys.stderr, flush=True)
    return records


def run_sweep(config_path: str | Path, out: str | Path, progress: bool = True, num_cpus: int | None = None) -> dict:
    """Run the sweep (or resume it: only the trials missing from the Optuna study run); writes
    ``sweep.json`` and ``best.yaml`` (the best trial's whole study config) to ``out``."""
    cfg, base = load_sweep(config_path)
    scenario = study_from_dict(base, str(config_path))
    check_resources(
        scenario,
        num_cpus,
        cfg.max_concurrent * cfg.trial_cpus,
        f"that max_concurrent {cfg.max_concurrent} trials of trial_cpus {cfg.trial_cpus:g} hold",
    )
    local = "://" not in str(out) or str(out).startswith("file://")
    if not local and cfg.storage is None:
        raise ConfigError(
            f"{config_path}: storage: a sweep whose --out is {out} needs an Optuna database every node reaches (e.g. "
            "postgresql://USER@HOST/DB, k8s/optuna-db.yaml); the default sqlite file is kept beside a local --out only"
        )
    check_writable(str(out))
    if local:
        out = Path(str(out).removeprefix("file://")).resolve()
        out.mkdir(parents=True, exist_ok=True)
    out = str(out)
    storage_url = cfg.storage or f"sqlite:///{out}/optuna.db"
    optuna_storage = optuna.storages.RDBStorage(storage_url)
    done = 0
    with contextlib.suppress(KeyError):  # a new study
        done = sum(
            t.state == optuna.trial.TrialState.COMPLETE
            for t in optuna.load_study(study_name=cfg.study_name, storage=optuna_storage).trials
        )
    remaining = max(cfg.num_samples - done, 0)
    t0 = time.perf_counter()
    store = f"{out}/units"
    if remaining:
        scenario.plan(store)  # the data, prepared once before trials share it (and its errors before Ray starts)
        init_ray(num_cpus=num_cpus)
        # a resumed sweep draws on from where it stopped: the same seed would propose the first trials' values again
        searcher = OptunaSearch(
            metric="objective",
            mode=cfg.objective.mode,
            study_name=cfg.study_name,
            storage=optuna_storage,
            seed=cfg.seed + done,
        )
        scheduler = ASHAScheduler(
            metric="objective", mode=cfg.objective.mode, max_t=1000, grace_period=1, reduction_factor=2
        )
        trainable = tune.with_resources(
            tune.with_parameters(trial, cfg=cfg, base=base, store=store, out=out),
            {"cpu": cfg.trial_cpus, "gpu": cfg.trial_gpus},
        )
        tuner = tune.Tuner(
            trainable,
            param_space=search_space(cfg),
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=scheduler,
                num_samples=remaining,
                max_concurrent_trials=cfg.max_concurrent,
            ),
            run_config=tune.RunConfig(name=cfg.study_name, storage_path=f"{out}/tune", verbose=1 if progress else 0),
        )
        tuner.fit()
    study = optuna.load_study(study_name=cfg.study_name, storage=optuna_storage)
    ended = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    complete = [r for r in finished_trials(out) if r["objective"] is not None and math.isfinite(r["objective"])]
    if not complete:
        raise RuntimeError(
            f"no trial of {cfg.study_name} ran every cell to a finite objective; see the Tune logs under {out}/tune"
        )
    best = max(complete, key=lambda t: t["objective"] if cfg.objective.mode == "max" else -t["objective"])
    best_config = trial_config(base, best["params"])
    storage.write_text(f"{out}/best.yaml", yaml.safe_dump(best_config, sort_keys=False))
    result = {
        "storage": storage_url,
        "study_name": cfg.study_name,
        "trials": [
            {"params": t["params"], "objective": t["objective"], "folder": trial_folder(out, t["params"])}
            for t in complete
        ],
        "trials_stopped_early": max(len(ended) - len(complete), 0),
        "trials_run": remaining,
        "trials_skipped": done,
        "best": {
            "params": best["params"],
            "objective": best["objective"],
            "metric": cfg.objective.metric,
            "mode": cfg.objective.mode,
        },
        "best_yaml": f"{out}/best.yaml",
        "seconds": round(time.perf_counter() - t0, 1),
        "config": dataclasses.asdict(cfg),
    }
    storage.write_text(f"{out}/sweep.json", json.dumps(result, indent=2, default=str))
    return result
