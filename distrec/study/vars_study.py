"""``distrec vars run``: every visually-aware victim attacked on its own images (the white-box table of
docs/methods.md section 3) from an ``item_image`` study without transfer, written as ``vars.json`` with the keys
``<victim>/<method>/<eps>/<defense>/t_hr@10`` and ``/mean_rank``, ``<victim>/clean_recall@20/<defense>``,
``detector/pgd/<eps>/auc`` and ``/accuracy``, ``detector/auc`` and ``meta``. The table's file is a plain study
config: ``distrec study`` runs the same units."""

from __future__ import annotations

import json
import time
from pathlib import Path

from distrec.config import ConfigError
from distrec.data.spec import materialise_dataset
from distrec.distributed import storage
from distrec.memory import peak_rss_mb
from distrec.study.engine import result_uri
from distrec.study.runner import config_dict, load_study, run_study
from distrec.study.scenarios.item_image import NO_ATTACK, ItemImage


def load_vars(path: str | Path) -> ItemImage:
    """The table's item_image study, checked as the white-box table: no transfer, every victim a surrogate."""
    scenario = load_study(path)
    cfg, src = scenario.config, scenario.source
    if not isinstance(scenario, ItemImage):
        raise ConfigError(f"{src}: scenario: the image-attack table is an item_image study, got {scenario.name!r}")
    if cfg.transfer or sorted(scenario.surrogates()) != sorted(cfg.victims):
        raise ConfigError(
            f"{src}: the image-attack table attacks each victim on its own images: set transfer: false and "
            "surrogates equal to the victims"
        )
    return scenario


def run_vars(config_path: str | Path, out: str | Path, progress: bool = True, num_cpus: int | None = None) -> dict:
    """Run (or resume) the table; writes ``vars.json`` beside the study's outputs."""
    scenario = load_vars(config_path)
    cfg = scenario.config
    t0 = time.perf_counter()
    study = run_study(config_path, str(out), progress, num_cpus, scenario=scenario)
    out = study["study_json"].rsplit("/", 1)[0]
    units = scenario.plan(out)
    read = lambda u: json.loads(storage.read_text(result_uri(out, u)))  # noqa: E731
    result, cells = {}, []
    for u in units:
        if u.stage != "cell":
            continue
        r, victim, defense = read(u), u.payload["victim"], u.payload["defense"] or "none"
        attack = r["config"]["attack"] or {"method": "none", "eps": 0}
        key = f"{victim}/{attack['method']}/{attack['eps']}/{defense}"
        if u.payload["row"] == NO_ATTACK:
            result[f"{victim}/clean_recall@20/{defense}"] = round(r["metrics"]["recall@20"], 5)
        result[f"{key}/t_hr@10"] = round(r["metrics"]["t_hr@10"], 6)
        result[f"{key}/mean_rank"] = round(r["metrics"]["mean_rank"], 1)
        cells.append(
            {
                "key": key,
                **{k: v for k, v in r["metrics"].items() if k not in ("recall@20", "rejected")},
                "rejected": r["rejected_count"],
            }
        )
    detection = study["summary"].get("detection")
    if detection:
        result.update({f"detector/{k}": v for k, v in detection.items()})
        result["detector/auc"] = detection[f"pgd/{cfg.adaptive_eps if cfg.adaptive_eps in cfg.eps else cfg.eps[0]}/auc"]
    encoder = read(next(u for u in units if u.stage == "encoder"))
    data = materialise_dataset(cfg.dataset, out)
    result["meta"] = {
        "config": config_dict(cfg),
        "config_file": str(config_path),
        "seed": cfg.seed,
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "items_with_image": data.table("item_images", ["item_id"]).num_rows,
        "items": data.n_items,
        "encoder": encoder["report"],
        "targets": units[-1].payload["targets"],
        "cells": cells,
        "vit_training": study["summary"].get("vit_training"),
    }
    storage.write_text(f"{out}/vars.json", json.dumps(result, indent=2))
    return result
