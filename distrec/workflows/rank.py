"""Adversarial ranking workflows: train a retrieval model (optionally with EST), attack it with one
(attack, eps, w or m) cell, and run the AdvRank grid as parallel Ray tasks (``distrec rank ...``)."""

from __future__ import annotations

import dataclasses
import json
import time
import zlib
from dataclasses import field
from pathlib import Path

import numpy as np
import pydantic
import ray
import torch
from tqdm.auto import tqdm

from distrec.attacks.ranking import RankPGD, Trials, build_objective, parse_attack, select_trials
from distrec.config import ConfigError, load_document, validate
from distrec.content_id import content_id
from distrec.data.labeled_images import LabeledImages, load_labeled_images
from distrec.data.spec import DatasetSpec, materialise_dataset
from distrec.defenses.est import EmbeddingShiftingTraining
from distrec.distributed.runtime import init_ray
from distrec.evaluation.retrieval import recall_at_k
from distrec.models.embedding import Embedder, create_embedder, embed_images
from distrec.models.embedding_trainer import TripletTrainingConfig, fit_embedder
from distrec.workflows.train import peak_rss_mb

FORBID = pydantic.ConfigDict(extra="forbid")
DEFENSES = ("none", "est")


def _device(device: str | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def train_ranker(
    data: str,
    model: str = "c2f2",
    model_config: dict | None = None,
    training: dict | None = None,
    defense: str = "none",
    est: dict | None = None,
    train_limit: int | None = None,
    out: str | Path | None = None,
    device: str | None = None,
    progress: bool = True,
    source: str = "config",
) -> dict:
    """Train ``model`` on the ``train`` split of a prepared labeled-image dataset, evaluate Recall@1/10
    on ``test`` (the candidate pool), and save it under ``out/model``. ``source`` names where the
    config came from, for error messages."""
    if defense not in DEFENSES:
        raise ConfigError(f"{source}: key defense: {defense!r} is not one of {DEFENSES}")
    train_cfg = TripletTrainingConfig(**validate(TripletTrainingConfig, training or {}, source, "training"))
    est_cfg = EmbeddingShiftingTraining(**validate(EmbeddingShiftingTraining, est or {}, source, "est")) if defense == "est" else None
    train = load_labeled_images(data, "train")
    test = load_labeled_images(data, "test")
    if train_limit:
        train = train.subset(train_limit, seed=train_cfg.seed)
    torch.manual_seed(train_cfg.seed)
    model_config = dict(model_config or {})
    if model == "c2f2":
        model_config.setdefault("in_chans", train.images.shape[1])
        model_config.setdefault("img_size", train.images.shape[2])
    net = create_embedder(model, **model_config).to(_device(device))
    t0 = time.perf_counter()
    history = fit_embedder(net, train, train_cfg, perturb=est_cfg.perturb if est_cfg else None, progress=progress)
    fit_seconds = time.perf_counter() - t0
    metrics = recall_at_k(embed_images(net, test, 1000), test.labels, net.metric, ks=(1, 10))
    result = {
        "model": model,
        "model_config": dataclasses.asdict(net.config),
        "training": dataclasses.asdict(train_cfg),
        "defense": defense,
        "est": dataclasses.asdict(est_cfg) if est_cfg else None,
        "train_images": len(train),
        "metrics": metrics,
        "fit_seconds": round(fit_seconds, 2),
        "seconds_per_epoch": round(fit_seconds / max(1, train_cfg.epochs), 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "history": history,
        "seed": train_cfg.seed,
        "data": str(data),
    }
    if out is not None:
        out = Path(out)
        net.save(out / "model")
        (out / "result.json").write_text(json.dumps(result, indent=2))
    return result


def attack_cell(
    model: Embedder,
    pool_images: LabeledImages,
    pool: torch.Tensor,
    attack: str,
    eps: float,
    k: int,
    trials: int,
    seed: int = 0,
    batch_size: int = 250,
    xi: float | None = None,
    alpha: float | None = None,
    steps: int | None = None,
    norm: str = "linf",
    random_start: bool = False,
    top_fraction: float = 0.01,
    preserve_size: int = 5,
    keep: bool = False,
) -> dict:
    """One AdvRank cell: ``trials`` attacked images drawn from the pool (the same rows for every cell with
    this ``seed``), ``k`` = w queries (CA) or m candidates (QA) per trial; mean rank percentile of the
    targets before and after the attack (and of the SP set for SP-QA). ``top_fraction`` is the
    neighbourhood CA- queries and QA- candidates come from (AdvRank: 1%), ``preserve_size`` G of SP-QA.
    ``keep``: also return the adversarial images and the trials (``adversarial``, ``trials``), so that
    the same perturbations can be measured on other models (transfer)."""
    spec = parse_attack(attack)
    model.eval()  # batch-norm backbones (timm) must not use or update batch statistics here
    device = pool.device
    rows = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:trials]
    pick = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(f"{spec.name}/{k}".encode()))
    pgd = RankPGD(model, eps, alpha, steps, norm=norm, random_start=random_start, generator=torch.Generator().manual_seed(seed))
    before, after, sp_before, sp_after, kept = [], [], [], [], []
    t0 = time.perf_counter()
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        chosen = select_trials(spec, pool, batch.to(device), k, model.metric, pick, top_fraction, preserve_size)
        objective = build_objective(spec, pool, chosen, model.metric, xi)
        adv = pgd(pool_images.floats(batch).to(device), objective)
        if keep:
            kept.append((adv.cpu(), chosen))
        with torch.no_grad():
            emb = model(adv)
        before.append(objective.rank(pool[batch.to(device)]).cpu())
        after.append(objective.rank(emb).cpu())
        if spec.sp:
            sp_before.append(objective.preserve_rank(pool[batch.to(device)]).cpu())
            sp_after.append(objective.preserve_rank(emb).cpu())
    seconds = time.perf_counter() - t0
    before_t, after_t = torch.cat(before), torch.cat(after)
    out = {
        "attack": spec.name,
        "eps": eps,
        "k": k,
        "trials": len(rows),
        "rank_before": float(before_t.mean()),
        "rank": float(after_t.mean()),
        "rank_sem": float(after_t.std() / np.sqrt(len(after_t))) if len(after_t) > 1 else 0.0,
        "alpha": pgd.alpha,
        "steps": pgd.steps,
        "seconds": round(seconds, 3),
        "seed": seed,
    }
    if spec.sp:
        out["sp_rank_before"] = float(torch.cat(sp_before).mean())
        out["sp_rank"] = float(torch.cat(sp_after).mean())
    if keep:
        out["adversarial"] = torch.cat([a for a, _ in kept])
        out["trials"] = Trials(*(torch.cat([getattr(t, f).cpu() for _, t in kept]) if getattr(kept[0][1], f) is not None else None for f in ("rows", "others", "preserve")))
    return out


# ----------------------------------------------------------------------------------------- the grid


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
    columns: dict[str, str] = field(default_factory=lambda: {"CA+": "CA+", "CA-": "CA-", "SP-QA+": "QA+", "SP-QA-": "QA-"})
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
            raise ConfigError(f"{path}: key attacks: {exc}") from None
        if name not in cfg.columns:
            raise ConfigError(f"{path}: key columns: no column for attack {name!r}")
    return cfg


def _threads(cpus: float) -> None:
    torch.set_num_threads(max(1, int(cpus)))


@ray.remote
def _train_task(cfg: RankGridConfig, data: str, role: str, out: str, cpus: float) -> dict:
    _threads(cpus)
    spec = cfg.undefended if role == "undefended" else cfg.defended
    return train_ranker(
        data, cfg.model, cfg.model_config, spec.training, "est" if role == "est" else "none", spec.est, cfg.train_limit, out=out, progress=False, source=f"grid {role}"
    )


@ray.remote
def _cell_task(model_dir: str, pool_images: LabeledImages, pool: torch.Tensor, cell: dict, cpus: float) -> dict:
    _threads(cpus)
    device = _device(None)
    model = Embedder.load(model_dir, device=device)
    return attack_cell(model, pool_images, pool.to(device), **cell)


def cell_key(role: str, column: str, eps: float, k: int) -> str:
    return f"{role}/{column}/{eps:g}/{k}"


def run_grid(config_path: str | Path, out: str | Path, progress: bool = True, num_cpus: int | None = None) -> dict:
    """Train (or reuse) both models as Ray tasks and, as soon as a model is ready, run its cells as Ray
    tasks. Models and finished cells are kept under ``out`` (content-addressed) and reused by a rerun.
    Writes ``advrank_<dataset>.json`` and ``.md`` to ``out``."""
    cfg = load_grid(config_path)
    out = Path(out)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    init_ray(num_cpus=num_cpus)
    opts = {"num_cpus": cfg.task_cpus, "num_gpus": cfg.task_gpus}
    data = materialise_dataset(cfg.data, str(out)).uri
    test = load_labeled_images(data, "test")
    test_ref = ray.put(test)
    model_dirs, trained, cells, waiting = {}, {}, {}, {}

    def submit_cells(role: str) -> None:
        weights = model_dirs[role] / "model"
        pool_ref = ray.put(embed_images(Embedder.load(weights), test, 1000).cpu())
        for attack in cfg.attacks:
            for eps in cfg.eps:
                for k in cfg.ks:
                    key = cell_key(role, cfg.columns[attack], eps, k)
                    cell = {"attack": attack, "eps": eps, "k": k, "trials": cfg.trials, "seed": cfg.seed, "batch_size": cfg.batch_size, "top_fraction": cfg.top_fraction}
                    path = out / "cells" / f"{content_id(model_dirs[role].name, cell)}.json"
                    if path.exists():
                        cells[key] = json.loads(path.read_text())
                    else:
                        ref = _cell_task.options(**opts).remote(str(weights), test_ref, pool_ref, cell, cfg.task_cpus)
                        waiting[ref] = ("cell", key, path)

    for role in ("undefended", "est"):
        spec = cfg.undefended if role == "undefended" else cfg.defended
        mid = content_id(data, cfg.model, cfg.model_config, spec.training, spec.est if role == "est" else None, cfg.train_limit)
        model_dirs[role] = out / "models" / f"{role}-{mid}"
        if (model_dirs[role] / "result.json").exists():
            trained[role] = json.loads((model_dirs[role] / "result.json").read_text())
            submit_cells(role)
        else:
            waiting[_train_task.options(**opts).remote(cfg, data, role, str(model_dirs[role]), cfg.task_cpus)] = ("train", role, None)
    n_cells = 2 * len(cfg.attacks) * len(cfg.eps) * len(cfg.ks)
    with tqdm(total=n_cells, initial=len(cells), desc=f"advrank {cfg.dataset}", disable=not progress, unit="cell") as bar:
        while waiting:
            done, _ = ray.wait(list(waiting), num_returns=1)
            kind, key, path = waiting.pop(done[0])
            if kind == "train":
                trained[key] = ray.get(done[0])
                bar.write(f"{key} model: recall@1 {trained[key]['metrics']['recall@1']:.2f}% in {trained[key]['fit_seconds']:.0f}s")
                submit_cells(key)
            else:
                cells[key] = ray.get(done[0])
                path.write_text(json.dumps(cells[key], indent=2))
            bar.n = len(cells)
            bar.refresh()
    wall = time.perf_counter() - t0
    result = {key: round(cells[key]["rank"], 2) for key in sorted(cells)}
    for role in model_dirs:
        result[f"{role}/recall@1"] = round(trained[role]["metrics"]["recall@1"], 2)
    result["meta"] = {
        "dataset": cfg.dataset,
        "config": dataclasses.asdict(cfg),
        "config_file": str(config_path),
        "seed": cfg.seed,
        "wall_seconds": round(wall, 1),
        "training": {role: {k: trained[role][k] for k in ("metrics", "fit_seconds", "seconds_per_epoch", "training", "est", "train_images")} for role in model_dirs},
        "cells": {key: cells[key] for key in sorted(cells)},
    }
    (out / f"advrank_{cfg.dataset}.json").write_text(json.dumps(result, indent=2))
    (out / f"advrank_{cfg.dataset}.md").write_text(grid_markdown(result, cfg))
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
    return "\n".join(lines) + f"\n\nTrials per cell: {cfg.trials}; seed {cfg.seed}; wall time of the whole grid (training included): {meta['wall_seconds'] / 60:.1f} min.\n"
