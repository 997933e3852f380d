"""``distrec rank grid``: AdvRank's white-box table (attacks x eps x w or m, on an undefended and an
EST-defended model) as a ranking study without transfer, written as ``advrank_<dataset>.json`` (cells
keyed ``<undefended|est>/<CA+|CA-|QA+|QA->/<eps>/<w or m>``) and ``.md`` in the paper's layout."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import field
from pathlib import Path

import pydantic

from distrec.attacks.ranking import parse_attack
from distrec.config import ConfigError, load_document
from distrec.data.spec import DatasetSpec
from distrec.distributed import storage
from distrec.study.engine import StageResources, result_uri
from distrec.study.runner import run_study
from distrec.study.scenarios.ranking import EmbedderSpec, Ranking, RankingConfig

FORBID = pydantic.ConfigDict(extra="forbid")
ROLES = {"undefended": "undefended", "defended+est": "est"}


@pydantic.dataclasses.dataclass(config=FORBID)
class GridModel:
    """How to train one of the grid's two models (undefended, est)."""

    training: dict = field(default_factory=dict)
    est: dict = field(default_factory=dict)


@pydantic.dataclasses.dataclass(config=FORBID)
class RankGridConfig:
    """The AdvRank table: ``attacks`` x ``eps`` x ``ks`` (w for CA, m for QA) on an undefended and an EST
    model. ``data``: a prepared dataset (``path``) or a source (``format: idx``, ``root``) prepared once
    under the output folder. ``columns`` names each attack's column in the table (the reference
    pipeline reports its semantics-preserving query attacks in the QA columns)."""

    dataset: str
    data: DatasetSpec
    model: str = "c2f2"
    model_config: dict = field(default_factory=dict)
    undefended: GridModel = field(default_factory=GridModel)
    defended: GridModel = field(default_factory=GridModel)
    train_limit: int | None = None
    attacks: list[str] = field(default_factory=lambda: ["CA+", "CA-", "SP-QA+", "SP-QA-"])
    columns: dict[str, str] = field(
        default_factory=lambda: {"CA+": "CA+", "CA-": "CA-", "SP-QA+": "QA+", "SP-QA-": "QA-"}
    )
    eps: list[float] = field(default_factory=lambda: [0.0, 0.01, 0.03, 0.1, 0.3])
    ks: list[int] = field(default_factory=lambda: [1, 2, 5, 10])
    trials: int = 10000
    batch_size: int = 250
    top_fraction: float = 0.01
    seed: int = 0
    task_cpus: float = 1
    task_gpus: float = 0


def load_grid(path: str | Path) -> RankGridConfig:
    cfg = load_document(RankGridConfig, path)
    for name in cfg.attacks:
        try:
            parse_attack(name)
        except ValueError as exc:
            raise ConfigError(f"{path}: attacks: {exc}") from None
        if name not in cfg.columns:
            raise ConfigError(f"{path}: columns: no column for attack {name!r}")
    return cfg


def as_study(cfg: RankGridConfig, source: str) -> Ranking:
    """The grid as a ranking study: two columns, each attacked on itself only."""
    spec = lambda m: EmbedderSpec(cfg.model, dict(cfg.model_config), dict(m.training))  # noqa: E731
    res = StageResources(cfg.task_cpus, cfg.task_gpus)
    study = RankingConfig(
        dataset=cfg.data,
        victims={"undefended": spec(cfg.undefended), "defended": spec(cfg.defended)},
        surrogates=list(ROLES),
        defenses={"est": dict(cfg.defended.est)},
        columns=list(ROLES),
        attacks=list(cfg.attacks),
        eps=list(cfg.eps),
        ks=list(cfg.ks),
        trials=cfg.trials,
        batch_size=cfg.batch_size,
        top_fraction=cfg.top_fraction,
        train_limit=cfg.train_limit,
        transfer=False,
        seed=cfg.seed,
        resources={"train": res, "craft": res, "cell": res},
    )
    scenario = Ranking(study, source)
    scenario.check()
    return scenario


def cell_key(role: str, column: str, eps: float, k: int) -> str:
    return f"{role}/{column}/{eps:g}/{k}"


def run_grid(config_path: str | Path, out: str | Path, progress: bool = True, num_cpus: int | None = None) -> dict:
    """Run (or resume) the grid; writes ``advrank_<dataset>.json`` and ``.md`` beside the study's outputs."""
    cfg = load_grid(config_path)
    t0 = time.perf_counter()
    scenario = as_study(cfg, str(config_path))
    study = run_study(config_path, str(out), progress, num_cpus, scenario=scenario)
    out = study["study_json"].rsplit("/", 1)[0]
    units = scenario.plan(out)
    read = lambda u: json.loads(storage.read_text(result_uri(out, u)))  # noqa: E731
    trained = {u.label: read(u) for u in units if u.stage == "train"}
    cells = {}
    for u in units:
        if u.stage == "craft":
            c = u.payload["cell"]
            role = ROLES[u.label.rsplit("@", 1)[1]]
            cells[cell_key(role, cfg.columns[c["attack"]], c["eps"], c["k"])] = {
                k: v
                for k, v in read(u).items()
                if k not in ("unit_id", "stage", "label", "unit_seconds", "host", "pid", "tensors", "row")
            }
    result = {key: round(cells[key]["rank"], 2) for key in sorted(cells)}
    for column, role in ROLES.items():
        result[f"{role}/recall@1"] = round(trained[column]["metrics"]["recall@1"], 2)
    result["meta"] = {
        "dataset": cfg.dataset,
        "config": dataclasses.asdict(cfg),
        "config_file": str(config_path),
        "seed": cfg.seed,
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "training": {
            role: {
                k: trained[c][k]
                for k in ("metrics", "fit_seconds", "seconds_per_epoch", "training", "est", "train_images")
            }
            for c, role in ROLES.items()
        },
        "cells": {key: cells[key] for key in sorted(cells)},
    }
    storage.write_text(f"{out}/advrank_{cfg.dataset}.json", json.dumps(result, indent=2))
    storage.write_text(f"{out}/advrank_{cfg.dataset}.md", grid_markdown(result, cfg))
    return result


def grid_markdown(result: dict, cfg: RankGridConfig) -> str:
    """The undefended and EST tables in the paper's layout: rows eps, columns the attacks, each cell the
    mean rank percentile for k = 1 / 2 / 5 / 10 (w for CA, m for QA)."""
    columns = [cfg.columns[a] for a in cfg.attacks]
    lines = [f"| eps | {' | '.join(columns)} |", "|---" * (len(columns) + 1) + "|"]
    for role in ("undefended", "est"):
        title = "undefended" if role == "undefended" else "EST-defended"
        lines.append(f"| **{title}, R@1 {result[f'{role}/recall@1']:.1f}%** |" + " |" * len(columns))
        for eps in cfg.eps:
            row = [" / ".join(f"{result[cell_key(role, c, eps, k)]:.1f}" for k in cfg.ks) for c in columns]
            lines.append(f"| {eps:g} | {' | '.join(row)} |")
    meta = result["meta"]
    return (
        "\n".join(lines)
        + f"\n\nTrials per cell: {cfg.trials}; seed {cfg.seed}; wall time of the whole grid (training included): "
        f"{meta['wall_seconds'] / 60:.1f} min.\n"
    )
