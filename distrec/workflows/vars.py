"""Image attacks on visually-aware recommenders and their defenses, end to end (methods.md section 3):
prepare interactions + item images, pre-train the image encoder, train the victims, craft FGSM/PGD
images for target items, and measure every (victim, attack, eps, defense) cell: T-HR@K and the mean
target rank, the clean Recall@20 each defense costs, detection accuracy / AUC, and adaptive attacks
(BPDA through the filters, EOT through a randomised ViT purifier)."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import field
from pathlib import Path

import numpy as np
import pydantic
import torch
from safetensors.torch import load_model, save_model
from tqdm.auto import tqdm

from distrec.attacks.budget import popularity_bucket
from distrec.attacks.item_image import ImageAttackConfig, ItemImageAttack, straight_through
from distrec.config import load_document, validate
from distrec.content_id import content_id
from distrec.data.item_images import ItemImages, load_item_images
from distrec.data.matrix import UserItemCSR
from distrec.data.spec import DatasetSpec, materialise_dataset
from distrec.defenses.filters import FILTERS
from distrec.defenses.vit_defense import ViTDefense, ViTDefenseConfig, train_vit_defense
from distrec.distributed.runtime import init_ray
from distrec.evaluation.ranking import full_ranking_metrics
from distrec.evaluation.targets import target_mean_rank, target_metrics
from distrec.models.base import Victim
from distrec.models.embedding import embed_images
from distrec.models.image_encoder import GenreEncoderConfig, pretrain_genre_encoder
from distrec.models.registry import create_victim
from distrec.workflows.train import peak_rss_mb

FORBID = pydantic.ConfigDict(extra="forbid")
VIT_DEFENSES = ("vit_filter", "vit_detector", "vit_filter_detector")


@pydantic.dataclasses.dataclass(config=FORBID)
class VarsConfig:
    """``victims``: name -> training config (``encoder`` and ``image_size`` are filled in); ``eps``: numerators
    over 255; ``defenses``: ``none``, the filters (``jpeg``, ``bit_depth``, ``median``), ``vit_filter``,
    ``vit_detector``, ``vit_filter_detector``; ``adaptive_eps``: eps of the adaptive PGD, which differentiates
    through the filter (BPDA for the non-differentiable ones, EOT over the ViT's random masks when
    ``vit.eval_mask_ratio`` > 0) but does not try to evade the detector."""

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
    defenses: list[str] = field(default_factory=lambda: ["none", "jpeg", "bit_depth", "median", "vit_filter", "vit_detector", "vit_filter_detector"])
    filters: dict[str, dict] = field(default_factory=dict)
    vit: dict = field(default_factory=dict)
    vit_train_items: int = 1500
    detection_items: int = 200
    adaptive_eps: int = 8
    eot_samples: int = 4
    seed: int = 0


def load_vars(path: str | Path) -> VarsConfig:
    return load_document(VarsConfig, path)


class Deployed:
    """A defense as deployed on item images: every image passes the filter; the detector rejects a
    flagged upload, so the item keeps its previous (clean) image."""

    def __init__(self, name: str, filter_: torch.nn.Module | None, detector: ViTDefense | None):
        self.name, self.filter, self.detector = name, filter_, detector

    @torch.no_grad()
    def apply(self, uploaded: torch.Tensor, previous: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The images the recommender sees, and which uploads were rejected."""
        rejected = self.detector.flag(uploaded) if self.detector is not None else torch.zeros(len(uploaded), dtype=torch.bool)
        kept = torch.where(rejected[:, None, None, None], previous, uploaded)
        out = self.filter(kept) if self.filter is not None else kept
        return out, rejected

    def attack_path(self) -> torch.nn.Module | None:
        """What an adaptive attacker differentiates through (BPDA for non-differentiable filters)."""
        if self.filter is None:
            return None
        return self.filter if isinstance(self.filter, ViTDefense) else straight_through(self.filter)


def run_vars(config_path: str | Path, out: str | Path, progress: bool = True, num_cpus: int | None = None) -> dict:
    cfg = load_vars(config_path)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    init_ray(num_cpus=num_cpus)
    data = materialise_dataset(cfg.dataset, str(out))
    images = load_item_images(data, cfg.image_size)  # decoded and resized by Ray Data
    log = (lambda msg: tqdm.write(f"[vars] {msg}")) if progress else (lambda msg: None)
    log(f"{int(images.has_image.sum())} of {data.n_items} items have an image")
    report: dict = {"items_with_image": int(images.has_image.sum()), "items": data.n_items}

    encoder_dir = out / f"encoder-{content_id(data.uri, cfg.image_size, cfg.encoder)}"
    enc_cfg = GenreEncoderConfig(**validate(GenreEncoderConfig, cfg.encoder, str(config_path), "encoder"))
    if not (encoder_dir / "config.json").exists():
        encoder, enc_report = pretrain_genre_encoder(images, data.item_categories(), enc_cfg, progress)
        encoder.save(encoder_dir)
        (encoder_dir / "report.json").write_text(json.dumps(enc_report, indent=2))
    report["encoder"] = {k: v for k, v in json.loads((encoder_dir / "report.json").read_text()).items() if k != "history"}
    log(f"encoder: genre top-1 precision {report['encoder']['holdout_top1_precision']:.3f} (majority {report['encoder']['majority_baseline']:.3f})")

    train = UserItemCSR.from_table(data.table("train"), data.n_users, data.n_items)
    test = UserItemCSR.from_table(data.table("test"), data.n_users, data.n_items)
    victims: dict[str, Victim] = {}
    for name, vcfg in cfg.victims.items():
        vdir = out / "victims" / f"{name}-{content_id(encoder_dir.name, vcfg)}"
        if (vdir / "config.json").exists():
            victims[name] = Victim.load(vdir)
        else:
            extra = {"categories": len(data.metadata.get("category_names") or []) or 1} if name == "deepstyle" else {}
            victim = create_victim(name, data.n_users, data.n_items, encoder=str(encoder_dir), image_size=cfg.image_size, **extra, **vcfg)
            t0 = time.perf_counter()
            victim.fit(data, progress=progress)
            victim.save(vdir)
            (vdir / "fit.json").write_text(json.dumps({"fit_seconds": time.perf_counter() - t0}))
            victims[name] = victim
        victims[name].eval()

    rng = np.random.default_rng(cfg.seed)
    bucket = popularity_bucket(train, cfg.target_bucket)
    bucket = bucket[images.has_image[torch.from_numpy(bucket)].numpy()]
    targets = np.sort(rng.choice(bucket, cfg.n_targets, replace=False))
    target_t = torch.from_numpy(targets)
    users = np.arange(data.n_users)
    users_t = torch.from_numpy(users)
    clean_targets = images.floats(target_t)
    report["targets"] = targets.tolist()

    vit = None
    if any(d in VIT_DEFENSES for d in cfg.defenses):
        first = next(iter(victims))
        vit = _vit_defense(
            cfg,
            victims[first],
            images,
            targets,
            out / f"vit-{content_id(first, cfg.victims[first], encoder_dir.name, cfg.vit, cfg.eps, cfg.pgd_steps, cfg.vit_train_items, targets.tolist())}",
            progress,
            log,
        )
    deployed = {d: _deploy(d, cfg, vit) for d in cfg.defenses}

    result: dict = {}
    cells = []
    for vname, victim in victims.items():
        crafted = {("none", 0): clean_targets}  # the non-adaptive attacker does not know the defense
        for method in cfg.methods:
            for eps in cfg.eps:
                attack = ItemImageAttack(victim, ImageAttackConfig(method=method, eps=eps / 255, steps=cfg.pgd_steps, goal=cfg.goal, seed=cfg.seed))
                crafted[(method, eps)] = attack(clean_targets, target_t, users_t)
        for dname, dep in deployed.items():
            base, _ = dep.apply(images.floats(), images.floats())
            features = embed_images(victim.encoder, base)
            clean = full_ranking_metrics(lambda u: victim.score_items_with(u, torch.arange(data.n_items), features), train, test, (20,))
            result[f"{vname}/clean_recall@20/{dname}"] = round(clean["recall@20"], 5)
            for (method, eps), uploaded in crafted.items():
                cells.append(_cell(victim, vname, dname, dep, method, eps, uploaded, clean_targets, features, target_t, users, train, result))
            if dname != "none":
                adaptive = ImageAttackConfig(
                    method="pgd",
                    eps=cfg.adaptive_eps / 255,
                    steps=cfg.pgd_steps,
                    goal=cfg.goal,
                    seed=cfg.seed,
                    eot_samples=cfg.eot_samples if dname in VIT_DEFENSES and cfg.vit.get("eval_mask_ratio", 0) > 0 else 1,
                )
                uploaded = ItemImageAttack(victim, adaptive, dep.attack_path())(clean_targets, target_t, users_t)
                cells.append(_cell(victim, vname, dname, dep, "pgd_adaptive", cfg.adaptive_eps, uploaded, clean_targets, features, target_t, users, train, result))
            log(f"{vname} / {dname}: clean recall@20 {clean['recall@20']:.4f}")
    if vit is not None:
        result.update(_detection(vit, victims[next(iter(victims))], cfg, images, targets, users_t))
    result["meta"] = {
        "config": dataclasses.asdict(cfg),
        "config_file": str(config_path),
        "seed": cfg.seed,
        "wall_seconds": round(time.perf_counter() - t_start, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        **report,
        "cells": cells,
    }
    (out / "vars.json").write_text(json.dumps(result, indent=2))
    return result


def _deploy(name: str, cfg: VarsConfig, vit: ViTDefense | None) -> Deployed:
    if name == "none":
        return Deployed(name, None, None)
    if name in FILTERS:
        return Deployed(name, FILTERS[name](**cfg.filters.get(name, {})), None)
    if name == "vit_filter":
        return Deployed(name, vit, None)
    if name == "vit_detector":
        return Deployed(name, None, vit)
    if name == "vit_filter_detector":
        return Deployed(name, vit, vit)
    raise ValueError(f"unknown defense {name!r}; choose from none, {', '.join(FILTERS)}, {', '.join(VIT_DEFENSES)}")


def _cell(victim, vname, dname, dep: Deployed, method, eps, uploaded, clean_targets, features, target_t, users, train, result) -> dict:
    seen, rejected = dep.apply(uploaded, clean_targets)
    feats = features.clone()
    feats[target_t] = embed_images(victim.encoder, seen)
    score = lambda u: victim.score_items_with(u, torch.arange(len(feats)), feats)  # noqa: E731
    metrics = target_metrics(score, train, target_t.tolist(), users, ks=(10, 20))
    mean_rank = target_mean_rank(score, train, target_t.tolist(), users)
    key = f"{vname}/{method}/{eps}/{dname}"
    result[f"{key}/t_hr@10"] = round(metrics["t_hr@10"], 6)
    result[f"{key}/mean_rank"] = round(mean_rank, 1)
    return {"key": key, **metrics, "mean_rank": mean_rank, "rejected": int(rejected.sum()), "linf_255": float((uploaded - clean_targets).abs().max() * 255)}


def _vit_items(cfg: VarsConfig, images: ItemImages, targets: np.ndarray) -> torch.Tensor:
    """The non-target items whose posters train the ViT defense (seeded)."""
    pool = np.setdiff1d(np.flatnonzero(images.has_image.numpy()), targets)
    return torch.from_numpy(np.sort(np.random.default_rng(cfg.seed + 1).choice(pool, min(cfg.vit_train_items, len(pool)), replace=False)))


def _vit_defense(cfg: VarsConfig, victim, images: ItemImages, targets: np.ndarray, out: Path, progress: bool, log) -> ViTDefense:
    """Train (or reload from ``out``) the ViT purifier + detector on clean posters of non-target items and
    PGD versions of them crafted against ``victim`` (promote and demote, eps drawn from ``cfg.eps``)."""
    vcfg = ViTDefenseConfig(**{"img_size": cfg.image_size, **validate(ViTDefenseConfig, cfg.vit, "vars config", "vit")})
    path = out / "model.safetensors"
    defense = ViTDefense(vcfg)
    if path.exists():
        load_model(defense, path)
        return defense.eval()
    rng = np.random.default_rng(cfg.seed + 3)
    items = _vit_items(cfg, images, targets)
    clean = images.floats(items)
    adversarial = torch.empty_like(clean)
    users = torch.arange(victim.n_users)
    eps = rng.choice(cfg.eps, len(items))
    goals = rng.choice(["promote", "demote"], len(items))
    for e in sorted(set(eps.tolist())):
        for goal in ("promote", "demote"):
            rows = torch.from_numpy(np.flatnonzero((eps == e) & (goals == goal)))
            if len(rows):
                attack = ItemImageAttack(victim, ImageAttackConfig(method="pgd", eps=e / 255, steps=cfg.pgd_steps, goal=goal, seed=cfg.seed))
                adversarial[rows] = attack(clean[rows], items[rows], users)
    log(f"vit defense: {len(items)} clean/adversarial pairs")
    history = train_vit_defense(defense, clean, adversarial, progress)
    out.mkdir(parents=True, exist_ok=True)
    save_model(defense, str(path))  # handles the transformer shared by both heads under joint training
    (out / "train.json").write_text(json.dumps({"config": dataclasses.asdict(vcfg), "history": history, "items": items.tolist()}, indent=2))
    return defense.eval()


def _auc(scores_neg: torch.Tensor, scores_pos: torch.Tensor) -> float:
    """P(score of an adversarial image > score of a clean one), ties counted half (Mann-Whitney U)."""
    diff = scores_pos[:, None] - scores_neg[None, :]
    return float((diff > 0).float().mean() + 0.5 * (diff == 0).float().mean())


def _detection(vit: ViTDefense, victim, cfg: VarsConfig, images: ItemImages, targets: np.ndarray, users: torch.Tensor) -> dict:
    """Detection on ``detection_items`` images the defense never saw in training: clean posters vs their
    PGD versions at every eps (AUC; accuracy at the calibrated threshold on the balanced set)."""
    unseen = np.setdiff1d(np.flatnonzero(images.has_image.numpy()), _vit_items(cfg, images, targets).numpy())
    items = torch.from_numpy(np.sort(np.random.default_rng(cfg.seed + 2).choice(unseen, min(cfg.detection_items, len(unseen)), replace=False)))
    clean = images.floats(items)
    scores_clean = vit.detection_score(clean)
    out = {}
    for e in cfg.eps:
        adv = ItemImageAttack(victim, ImageAttackConfig(method="pgd", eps=e / 255, steps=cfg.pgd_steps, goal=cfg.goal, seed=cfg.seed))(clean, items, users)
        scores_adv = vit.detection_score(adv)
        correct = (scores_adv > vit.threshold).float().sum() + (scores_clean <= vit.threshold).float().sum()
        out[f"detector/pgd/{e}/auc"] = round(_auc(scores_clean, scores_adv), 4)
        out[f"detector/pgd/{e}/accuracy"] = round(float(correct / (2 * len(clean))), 4)
    out["detector/auc"] = out[f"detector/pgd/{cfg.adaptive_eps if cfg.adaptive_eps in cfg.eps else cfg.eps[0]}/auc"]
    return out
