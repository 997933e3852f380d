"""``distrec rank grid``: AdvRank's white-box table (attacks x eps x w or m, one block per model) from a
``ranking`` study without transfer, written as ``advrank_<name>.json`` (cells keyed
``<role>/<CA+|CA-|QA+|QA->/<eps>/<w or m>``, a column's role being ``undefended`` or its defense, e.g. ``est``)
and ``.md`` in the paper's layout. The grid file is a plain study config: ``distrec study`` runs the same units."""

from __future__ import annotations

import json
import time
from pathlib import Path

from distrec.config import ConfigError
from distrec.defenses.chain import Column
from distrec.distributed import storage
from distrec.study.engine import result_uri
from distrec.study.runner import config_dict, load_study, run_study
from distrec.study.scenarios.ranking import Ranking

CELL_KEYS = ("unit_id", "stage", "label", "unit_seconds", "host", "pid", "tensors", "row")


def table_column(attack: str) -> str:
    """The paper's column of an attack: its semantics-preserving variants are reported as QA (SP-QA+ -> QA+)."""
    return attack.removeprefix("SP-")


def roles(scenario: Ranking) -> dict[str, str]:
    """Each column's block in the table: ``undefended``, or its defense chain (``est``)."""
    out = {c: "+".join(Column.parse(c).defenses) or "undefended" for c in scenario.columns()}
    if len(set(out.values())) != len(out):
        raise ConfigError(f"{scenario.source}: columns: the grid needs one column per defense (got {list(out)})")
    return out


def load_grid(path: str | Path) -> Ranking:
    """The grid's ranking study, checked as a grid: no transfer, one seed, every column a surrogate."""
    scenario = load_study(path)
    cfg, src = scenario.config, scenario.source
    if not isinstance(scenario, Ranking):
        raise ConfigError(f"{src}: scenario: the AdvRank grid is a ranking study, got {scenario.name!r}")
    if cfg.transfer or len(cfg.seeds) != 1 or sorted(cfg.surrogates) != sorted(scenario.columns()):
        raise ConfigError(
            f"{src}: the AdvRank grid attacks each column on itself: set transfer: false, one seed and surrogates "
            "equal to the columns"
        )
    roles(scenario)
    return scenario


def grid_name(scenario: Ranking) -> str:
    """The table's name: the dataset's folder (``mnist`` for ``root: ../shared/data/mnist``)."""
    spec = scenario.config.dataset
    return Path(str(spec.root or spec.path or "synthetic").rstrip("/")).name


def cell_key(role: str, column: str, eps: float, k: int) -> str:
    return f"{role}/{column}/{eps:g}/{k}"


def run_grid(
    config_path: str | Path, out: str | Path, progress: bool = True, num_cpus: int | None = None, scenario=None
) -> dict:
    """Run (or resume) the grid; writes ``advrank_<name>.json`` and ``.md`` beside the study's outputs
    (``scenario``: the grid already loaded from ``config_path``)."""
    scenario = scenario or load_grid(config_path)
    cfg, name, role_of = scenario.config, grid_name(scenario), roles(scenario)
    t0 = time.perf_counter()
    study = run_study(config_path, str(out), progress, num_cpus, scenario=scenario)
    out = study["study_json"].rsplit("/", 1)[0]
    units = scenario.plan(out)
    read = lambda u: json.loads(storage.read_text(result_uri(out, u)))  # noqa: E731
    trained = {u.label: read(u) for u in units if u.stage == "train"}
    cells = {}
    for u in units:
        if u.stage == "craft":
            c = u.payload["cell"]
            role = role_of[u.label.rsplit("@", 1)[1]]
            cells[cell_key(role, table_column(c["attack"]), c["eps"], c["k"])] = {
                k: v for k, v in read(u).items() if k not in CELL_KEYS
            }
    result = {key: round(cells[key]["rank"], 2) for key in sorted(cells)}
    for column, role in role_of.items():
        result[f"{role}/recall@1"] = round(trained[column]["metrics"]["recall@1"], 2)
    result["meta"] = {
        "dataset": name,
        "config": config_dict(cfg),
        "config_file": str(config_path),
        "seed": cfg.seed,
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "training": {
            role: {
                k: trained[c][k]
                for k in ("metrics", "fit_seconds", "seconds_per_epoch", "training", "est", "train_images")
            }
            for c, role in role_of.items()
        },
        "cells": {key: cells[key] for key in sorted(cells)},
    }
    storage.write_text(f"{out}/advrank_{name}.json", json.dumps(result, indent=2))
    storage.write_text(f"{out}/advrank_{name}.md", grid_markdown(result, scenario))
    return result


def grid_markdown(result: dict, scenario: Ranking) -> str:
    """One block per model in the paper's layout: rows eps, columns the attacks, each cell the mean rank
    percentile for k = 1 / 2 / 5 / 10 (w for CA, m for QA)."""
    cfg = scenario.config
    columns = [table_column(a) for a in cfg.attacks]
    lines = [f"| eps | {' | '.join(columns)} |", "|---" * (len(columns) + 1) + "|"]
    for role in roles(scenario).values():
        title = "undefended" if role == "undefended" else f"{role.upper()}-defended"
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
