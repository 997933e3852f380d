"""Visually-aware recommenders under image attacks, with defenses (docs/methods.md section 3): runs
``distrec vars run`` and writes the T-HR@10 / target-rank tables, the clean Recall@20 cost of each
defense, detection accuracy and AUC, and how much of the attack's target-rank shift each defense undoes.

    python jobs/repro_vars.py --config configs/vars/ml1m_cpu.yaml --out runs/vars_ml1m --results docs/results

Resumable: the encoder, the victims and the ViT defense in --out are reused.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import machine  # noqa: E402
from distrec.study.vars_study import load_vars, run_vars  # noqa: E402


def undone(result: dict, victim: str, defense: str, eps: int, metric: str) -> float | None:
    """Share of the PGD effect at ``eps`` on ``metric`` that the defense undoes, each effect measured against
    the same column's no-attack row: 1 - effect(defense) / effect(none). ``None`` when there is nothing to undo."""
    try:
        effect = {
            d: result[f"{victim}/pgd/{eps}/{d}/{metric}"] - result[f"{victim}/none/0/{d}/{metric}"]
            for d in ("none", defense)
        }
    except KeyError:
        return None
    if metric == "mean_rank":  # promotion lowers the rank
        effect = {d: -v for d, v in effect.items()}
    return None if effect["none"] <= (1 if metric == "mean_rank" else 0) else 1 - effect[defense] / effect["none"]


def training_table(history: list[dict] | None) -> list[str]:
    """The ViT's training record: losses, the detector embeddings' spread, the validation pairs' numbers
    (``selected``: the detector epoch whose weights were kept)."""
    if not history:
        return []
    keys = [
        "pixel",
        "feature",
        "contrastive",
        "classifier",
        "spread",
        "separation",
        "valid_auc",
        "valid_auc_classifier",
        "valid_pixel",
        "valid_feature_adv",
        "valid_feature_purified_adv",
        "valid_feature_purified_clean",
        "selected",
        "seconds",
    ]
    keys = [k for k in keys if any(k in h for h in history)]  # phases record different losses
    lines = [
        "### ViT defense training (validation: held-out items' clean / PGD pairs)",
        "",
        "| phase | epoch | " + " | ".join(keys) + " |",
        "|---" * (len(keys) + 2) + "|",
    ]
    lines += [
        f"| {h['phase']} | {h['epoch']} | " + " | ".join(f"{h[k]:.4g}" if k in h else "-" for k in keys) + " |"
        for h in history
    ]
    return lines + [""]


def tables(result: dict, cfg) -> list[str]:
    columns = ["none", *cfg.defenses]
    rows = [("none", 0)] + [(m, e) for m in cfg.methods for e in cfg.eps] + [("pgd_adaptive", cfg.adaptive_eps)]
    lines = []
    for victim in cfg.victims:
        for metric, title in (
            ("t_hr@10", "T-HR@10 (%)"),
            ("mean_rank", "mean target rank (of 3,706 items; lower = promoted)"),
        ):
            lines += [
                f"### {victim}: {title}",
                "",
                "| attack | " + " | ".join(columns) + " |",
                "|---" * (len(columns) + 1) + "|",
            ]
            for method, eps in rows:
                cells = []
                for d in columns:
                    v = result.get(f"{victim}/{method}/{eps}/{d}/{metric}")
                    cells.append("-" if v is None else (f"{100 * v:.2f}" if metric == "t_hr@10" else f"{v:.0f}"))
                label = (
                    "no attack"
                    if method == "none"
                    else f"{method.upper().replace('_ADAPTIVE', ' adaptive (BPDA/EOT)')} {eps}/255"
                )
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
            lines.append("")
        base = result[f"{victim}/clean_recall@20/none"]
        lines.append(
            f"Clean Recall@20 of {victim} per defense (relative change): "
            + ", ".join(
                f"{d} {result[f'{victim}/clean_recall@20/{d}']:.4f} "
                f"({100 * (result[f'{victim}/clean_recall@20/{d}'] / base - 1):+.1f}%)"
                for d in columns
            )
        )
        lines.append("")
        for metric, what in (("t_hr@10", "T-HR@10 lift"), ("mean_rank", "target-rank shift")):
            parts = [
                f"{d} {100 * r:.0f}%"
                for d in columns
                if d != "none" and (r := undone(result, victim, d, 8, metric)) is not None
            ]
            lines += [f"Share of the PGD 8/255 {what} undone on {victim}: " + ", ".join(parts), ""]
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--results", help="folder for vars_ml1m.json / .md (e.g. docs/results)")
    ap.add_argument("--num-cpus", type=int)
    args = ap.parse_args()
    cfg = load_vars(args.config).config
    result = run_vars(args.config, args.out, num_cpus=args.num_cpus)
    meta = result["meta"]
    meta["machine"] = machine()
    meta["command"] = f"python jobs/repro_vars.py --config {args.config} --out {args.out}" + (
        f" --results {args.results}" if args.results else ""
    )
    text = ["# Image attacks on visually-aware recommenders (ML-1M posters) and defenses", ""]
    text += [
        f"Command: `{meta['command']}` ({meta['machine']}); wall time {meta['wall_seconds'] / 60:.1f} min, peak RSS "
        f"{meta['peak_rss_mb']:.0f} MB.",
        f"{meta['items_with_image']} of {meta['items']} items have a poster; encoder genre top-1 precision "
        f"{meta['encoder']['holdout_top1_precision']:.3f} (majority baseline "
        f"{meta['encoder']['majority_baseline']:.3f}); "
        f"{len(meta['targets'])} target items ({cfg.target_bucket} bucket), goal {cfg.goal}; detector: "
        + ", ".join(
            f"eps {e}/255 AUC {result.get(f'detector/pgd/{e}/auc', float('nan')):.3f} accuracy "
            f"{result.get(f'detector/pgd/{e}/accuracy', float('nan')):.3f}"
            for e in cfg.eps
        ),
        "",
    ]
    text += tables(result, cfg) + training_table(meta.get("vit_training"))
    if args.results:
        res = Path(args.results)
        res.mkdir(parents=True, exist_ok=True)
        (res / "vars_ml1m.json").write_text(json.dumps(result, indent=2))
        (res / "vars_ml1m.md").write_text("\n".join(text))
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
