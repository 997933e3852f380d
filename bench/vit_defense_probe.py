"""A quick probe of the ViT defense on ML-1M posters, outside the study grid: train it on ``--items`` posters
against the VBPR victim of an item_image study run, then measure on unseen posters the detector's AUC, TPR and
FPR per eps, and on 20 other target items how much of a PGD 8/255 promotion the ViT filter and the median
filter undo (T-HR@10 and mean target rank, each against its own no-attack number).

    distrec study configs/study/ml1m_item_image.yaml --out runs/study_ml1m_item_image   # the victims
    python bench/vit_defense_probe.py --study runs/study_ml1m_item_image --items 800 \\
        --vit '{"pretrain_epochs": 30, "epochs": 3, "attack_steps": 2, "feature_weight": 0.1, "mask_ratio": 0.5,
               "lr": 0.002}'
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distrec.attacks.item_image import ImageAttackConfig, ItemImageAttack  # noqa: E402
from distrec.data.dataset import PreparedDataset  # noqa: E402
from distrec.data.item_images import load_item_images  # noqa: E402
from distrec.data.matrix import UserItemCSR  # noqa: E402
from distrec.defenses.filters import median_filter  # noqa: E402
from distrec.defenses.vit_defense import ViTDefense, ViTDefenseConfig, mann_whitney_auc, train_vit_defense  # noqa: E402
from distrec.metrics.ranking import full_ranking_metrics  # noqa: E402
from distrec.metrics.targets import target_mean_rank, target_metrics  # noqa: E402
from distrec.models.embedding import embed_images  # noqa: E402
from distrec.study.scenarios.item_image import load_visual  # noqa: E402


def pgd(victim, eps: float, steps: int, goal: str = "promote"):
    users = torch.arange(victim.n_users)
    return lambda x, items: ItemImageAttack(
        victim, ImageAttackConfig(method="pgd", eps=eps, steps=steps, goal=goal, seed=0)
    )(x, items, users)


def filter_effect(victim, data, images, targets, filters: dict) -> dict:
    """Per filter: T-HR@10 and mean target rank without and with PGD 8/255, and clean Recall@20."""
    train = UserItemCSR.from_table(data.table("train"), data.n_users, data.n_items)
    test = UserItemCSR.from_table(data.table("test"), data.n_users, data.n_items)
    every, users = images.floats(), np.arange(data.n_users)
    clean_t = images.floats(targets)
    attacked = pgd(victim, 8 / 255, 10)(clean_t, targets)
    out = {}
    with torch.no_grad():
        for name, filt in filters.items():
            base = embed_images(
                victim.encoder, torch.cat([filt(every[s : s + 256]) for s in range(0, len(every), 256)])
            )
            row = {
                "recall@20": full_ranking_metrics(
                    lambda u, f=base: victim.score_items_with(u, torch.arange(len(f)), f), train, test, (20,)
                )["recall@20"]
            }
            for label, img in (("clean", clean_t), ("pgd8", attacked)):
                feats = base.clone()
                feats[targets] = embed_images(victim.encoder, filt(img))

                def score(u, f=feats):
                    return victim.score_items_with(u, torch.arange(len(f)), f)

                row[f"{label}/t_hr@10"] = target_metrics(score, train, targets.tolist(), users, ks=(10,))["t_hr@10"]
                row[f"{label}/mean_rank"] = target_mean_rank(score, train, targets.tolist(), users)
            out[name] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", default="runs/study_ml1m_item_image")
    ap.add_argument("--items", type=int, default=800)
    ap.add_argument("--vit", default="{}", help="ViTDefenseConfig keys as JSON")
    ap.add_argument("--out", help="write the result JSON here")
    args = ap.parse_args()
    encoder = glob.glob(f"{args.study}/checkpoints/*/encoder")[0]
    victim = next(
        load_visual(d, encoder)
        for d in glob.glob(f"{args.study}/checkpoints/*/victim")
        if json.loads(Path(d, "config.json").read_text())["name"] == "vbpr"
    )
    data = PreparedDataset(
        Path(
            sorted(glob.glob(f"{args.study}/data/*/metadata.json") + glob.glob(f"{args.study}/data/metadata.json"))[0]
        ).parent
    )
    images = load_item_images(data, 64, backend="memory")
    cfg = ViTDefenseConfig(img_size=64, **json.loads(args.vit))
    pool = np.flatnonzero(images.has_image.numpy())
    items = torch.from_numpy(np.sort(np.random.default_rng(1).choice(pool, args.items + 220, replace=False)))
    train_items, targets, unseen = items[: args.items], items[args.items : args.items + 20], items[args.items + 20 :]

    def adversary(x, rows, eps, goal):
        return ItemImageAttack(
            victim, ImageAttackConfig(method="pgd", eps=eps, steps=cfg.attack_steps, goal=goal, seed=0)
        )(x, train_items[rows], torch.arange(victim.n_users))

    defense = ViTDefense(cfg)
    t0 = time.perf_counter()
    history = train_vit_defense(defense, images.floats(train_items), adversary, victim.encoder, progress=True)
    result = {
        "config": vars(cfg),
        "items": args.items,
        "train_seconds": round(time.perf_counter() - t0, 1),
        "history": history,
        "detector": {},
    }
    clean = images.floats(unseen)
    scores_clean = defense.detection_score(clean)
    for e in (4, 8, 16):
        scores_adv = defense.detection_score(pgd(victim, e / 255, 10)(clean, unseen))
        result["detector"][e] = {
            "auc": mann_whitney_auc(scores_clean, scores_adv),
            "tpr": float((scores_adv > defense.threshold).float().mean()),
            "fpr": float((scores_clean > defense.threshold).float().mean()),
        }
    result["filters"] = filter_effect(
        victim,
        data,
        images,
        targets,
        {"none": lambda x: x, "median": lambda x: median_filter(x, 3), "vit": defense.purify},
    )
    print(json.dumps({k: v for k, v in result.items() if k != "history"}, indent=1, default=str))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
