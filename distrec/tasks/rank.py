"""Adversarial ranking workflows: train a retrieval model (optionally with EST) and attack it with one
(attack, eps, w or m) cell (``distrec rank train|attack``); the grid is a study (:mod:`distrec.study.advrank_grid`)."""

from __future__ import annotations

import dataclasses
import json
import time
import zlib
from pathlib import Path

import numpy as np
import pydantic
import torch

from distrec.attacks.ranking import RankPGD, Trials, build_objective, parse_attack, select_trials
from distrec.config import ConfigError, check_keys
from distrec.data.labeled_images import LabeledImages, load_labeled_images
from distrec.defenses.est import EmbeddingShiftingTraining
from distrec.evaluation.retrieval import recall_at_k
from distrec.files import write_local
from distrec.memory import peak_rss_mb
from distrec.models.embedding import Embedder, create_embedder, embed_images
from distrec.models.embedding_trainer import TripletTrainingConfig, fit_embedder

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
        raise ConfigError(f"{source}: defense: {defense!r} is not one of {DEFENSES}")
    train_cfg = TripletTrainingConfig(**check_keys(TripletTrainingConfig, training or {}, source, "training"))
    est_cfg = (
        EmbeddingShiftingTraining(**check_keys(EmbeddingShiftingTraining, est or {}, source, "est"))
        if defense == "est"
        else None
    )
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
        write_local(out / "result.json", json.dumps(result, indent=2))
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
    ``keep``: also return the adversarial images and the trials they attack (``adversarial``, ``trial_set``), so that
    the same perturbations can be measured on other models (transfer)."""
    spec = parse_attack(attack)
    model.eval()  # batch-norm backbones (timm) must not use or update batch statistics here
    device = pool.device
    rows = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:trials]
    pick = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(f"{spec.name}/{k}".encode()))
    pgd = RankPGD(
        model, eps, alpha, steps, norm=norm, random_start=random_start, generator=torch.Generator().manual_seed(seed)
    )
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
        out["trial_set"] = Trials(
            *(
                torch.cat([getattr(t, f).cpu() for _, t in kept]) if getattr(kept[0][1], f) is not None else None
                for f in ("rows", "others", "preserve")
            )
        )
    return out
