"""``distrec vars run``: every visually-aware victim attacked on its own images (the white-box table of
docs/methods.md section 3) as an item_image study without transfer, written as ``vars.json`` with the keys
``<victim>/<method>/<eps>/<defense>/t_hr@10`` and ``/mean_rank``, ``<victim>/clean_recall@20/<defense>``,
``detector/pgd/<eps>/auc`` and ``/accuracy``, ``detector/auc`` and ``meta``."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import field
from pathlib import Path

import pydantic

from distrec.config import load_document
from distrec.data.spec import DatasetSpec, materialise_dataset
from distrec.distributed import storage
from distrec.memory import peak_rss_mb
from distrec.study.engine import StageResources, result_uri
from distrec.study.runner import run_study
from distrec.study.scenarios.item_image import NO_ATTACK, ItemImage, ItemImageConfig

FORBID = pydantic.ConfigDict(extra="forbid")


@pydantic.dataclasses.dataclass(config=FORBID)
class VarsConfig:
    """``victims``: name -> training config (``encoder`` and ``image_size`` are filled in); ``eps``: numerators
    over 255; ``defenses``: ``none``, the filters (``jpeg``, ``bit_depth``, ``median``; settings under
    ``filters``), ``vit_filter``, ``vit_detector``, ``vit_filter_detector``; ``adaptive_eps``: eps of the
    adaptive PGD, which differentiates through the filter (BPDA for the non-differentiable ones, EOT over
    the ViT's random partitions when ``vit.random_partition``) and, where the ViT detector is deployed, evades
    it (selective PGD: a flagged image descends the detector's score, an unflagged one the attack loss)."""

    dataset: DatasetSpec
    image_size: int = 64
    encoder: dict = field(default_factory=dict)
    victims: dict[str, dict] = field(default_factory=lambda: {"vbpr": {}, "amr": {}})
    n_targets: int = 20
    target_bucket: str = "tail"
    methods: list[str] = field(default_factory=lambda: ["fgsm", "pgd"])
    eps: list[int] = field(default_factory=lambda: [4, 8, 16])
    pgd_steps: int = 10
    goal: str = "promote"
    defenses: list[str] = field(
        default_factory=lambda: [
            "none",
            "jpeg",
            "bit_depth",
            "median",
            "vit_filter",
            "vit_detector",
            "vit_filter_detector",
        ]
    )
    filters: dict[str, dict] = field(default_factory=dict)
    vit: dict = field(default_factory=dict)
    vit_train_items: int = 1500
    detection_items: int = 200
    adaptive_eps: int = 8
    eot_samples: int = 4
    seed: int = 0
    task_cpus: float = 1
    task_gpus: float = 0


def load_vars(path: str | Path) -> VarsConfig:
    return load_document(VarsConfig, path)


def as_study(cfg: VarsConfig, source: str) -> ItemImage:
    res = StageResources(cfg.task_cpus, cfg.task_gpus)
    defenses = [d for d in cfg.defenses if d != "none"]
    study = ItemImageConfig(
        dataset=cfg.dataset,
        victims=dict(cfg.victims),
        image_size=cfg.image_size,
        encoder=dict(cfg.encoder),
        surrogates=list(cfg.victims),
        transfer=False,
        defenses={d: dict(cfg.filters.get(d, {})) for d in defenses},
        columns=[f"{v}+{d}" if d != "none" else v for v in cfg.victims for d in cfg.defenses],
        vit=dict(cfg.vit),
        n_targets=cfg.n_targets,
        target_bucket=cfg.target_bucket,
        methods=list(cfg.methods),
        eps=list(cfg.eps),
        pgd_steps=cfg.pgd_steps,
        goal=cfg.goal,
        adaptive_eps=cfg.adaptive_eps,
        eot_samples=cfg.eot_samples,
        vit_train_items=cfg.vit_train_items,
        detection_items=cfg.detection_items,
        seed=cfg.seed,
        resources={s: res for s in ItemImage.stages},
    )
    scenario = ItemImage(study, source)
    scenario.check()
    return scenario


def run_vars(config_path: str | Path, out: str | Path, progress: bool = True, num_cpus: int | None = None) -> dict:
    """Run (or resume) the table; writes ``vars.json`` beside the study's outputs."""
    cfg = load_vars(config_path)
    t0 = time.perf_counter()
    scenario = as_study(cfg, str(config_path))
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
        "config": dataclasses.asdict(cfg),
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
