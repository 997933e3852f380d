"""RAWP-FT reproduction on ML-1M (docs/methods.md section 5): runs the robustness study of a config through the
study engine (resumable: a rerun computes only what is missing) and writes the issue's JSON and a report.

    python jobs/repro_rawpft.py --config configs/study/ml1m_robustness_ncf_cpu.yaml --out runs/rawpft_ml1m_ncf \
        --results docs/results/rawpft_ml1m --second docs/results/rawpft_ml1m_random_holdout.json

``--second`` sets an earlier run's results (another protocol) beside this one's clean numbers, labelled.

JSON keys: ``<model>/<defense>/clean/hr@10`` and ``/ndcg@10`` (model ``mlp`` = DeepCF, ``neumf``; defense
``none`` for the plain model), ``<model>/<defense>/fgsm/<eps>/hr@10`` and ``/ndcg@10``,
``full/<model>/<defense>/clean/...`` for the full ranking, ``meta``; fractions, averaged over the study's seeds."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import machine, run_reproduction, write_results  # noqa: E402

MODEL = {"deepcf": "mlp", "neumf": "neumf"}
# the authors' plotting data (docs/methods.md section 5), percent
PAPER_CLEAN = {
    "mlp/none": (71.51, 43.51),
    "mlp/rat": (71.29, 43.33),
    "mlp/rawp": (71.95, 43.33),
    "mlp/rawp_ft": (72.15, 43.50),
}
PAPER_EPS = [0.001, 0.002, 0.004, 0.005, 0.008, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1]
PAPER_FGSM = {
    "mlp/rawp": [72.30, 71.26, 66.13, 62.67, 53.97, 49.67, 40.68, 35.68, 31.44, 28.91, 25.94],
    "mlp/rawp_ft": [71.95, 72.09, 70.89, 69.27, 61.97, 58.15, 49.57, 44.11, 38.16, 34.19, 30.31],
}


def key(column: str) -> str:
    victim, _, defense = column.partition("+")
    return f"{MODEL.get(victim, victim)}/{defense or 'none'}"


def mean(values) -> float:
    values = [v for v in values if v is not None]
    return round(sum(values) / len(values), 4) if values else None


def results_json(cells: list[dict], study: dict, wall: float) -> dict:
    """The issue's flat keys from the study's cells (one per row x column x seed)."""
    out: dict = {}
    groups: dict = {}
    for c in cells:
        groups.setdefault((c["row"], c["column"]), []).append(c)
    for (row, column), group in sorted(groups.items()):
        k = key(column)
        if row == "no attack":
            prefix = "all_" if group[0].get("all_hr@10") is not None else ""
            for m in ("hr@10", "ndcg@10"):
                out[f"{k}/clean/{m}"] = mean(g[prefix + m] for g in group)
                out[f"full/{k}/clean/{m}"] = mean(g.get(f"full_{m}") for g in group)
                out[f"{k}/clean_eval_users/{m}"] = mean(g[m] for g in group)
            continue
        method, _, eps = row.partition(" eps=")
        for m in ("hr@10", "ndcg@10"):
            out[f"{k}/{method}/{eps}/{m}"] = mean(g[m] for g in group)
    out["meta"] = {
        "config": study["config"],
        "config_file": study["config_file"],
        "seeds": study["config"]["seeds"],
        "protocol": protocol(study["config"]["dataset"]),
        "training": {
            c: {k: v for k, v in t.items() if k in ("fit_seconds", "layer_robustness", "fine_tuned", "interpolation")}
            for c, t in study["summary"]["training"].items()
        },
        "wall_seconds_last_run": round(wall, 1),  # a resumed run computes only what is missing
        "train_seconds": round(sum(t["fit_seconds"] for t in study["summary"]["training"].values()), 1),
        "machine": machine(),
    }
    return out


def protocol(dataset: dict) -> str:
    """The evaluation protocol of a study's dataset, in words."""
    if dataset.get("format") == "ncf":
        held = "NCF's own ML-1M split (each user's latest rating held out, ml-1m.test.rating) and NCF's 99 negatives"
    else:
        held = "leave-one-out with the held-out item drawn with the seed (the ML-1M copy has no timestamps)"
    return f"{held}; HR/NDCG@10 of the held-out item among its 100 candidates; full/...: every unseen item"


def second_protocol(res: dict, other: dict) -> list[str]:
    """This run's clean numbers beside another protocol's, and the paper's."""
    lines = ["", "## Clean HR@10 under both protocols (%)", ""]
    lines += [f"This run: {res['meta']['protocol']}.", "", f"Second protocol: {other['meta'].get('protocol')}.", ""]
    lines += ["| model / defense | this run | second protocol | paper |", "|---|---|---|---|"]
    for k in sorted({key.rsplit("/clean/", 1)[0] for key in res if key.endswith("/clean/hr@10") and "/" in key}):
        if k.startswith("full/"):
            continue
        paper = PAPER_CLEAN.get(k, (None, None))[0]
        lines.append(
            f"| {k} | {pct(res.get(f'{k}/clean/hr@10'))} | {pct(other.get(f'{k}/clean/hr@10'))} | "
            f"{'' if paper is None else f'{paper:.2f}'} |"
        )
    return lines


def pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}"


def report(res: dict, columns: list[str]) -> str:
    keys = [key(c) for c in columns]
    lines = ["## Clean accuracy (NCF protocol, all test users; full ranking beside)", ""]
    lines += [
        "| model / defense | HR@10 | NDCG@10 | paper HR@10 | paper NDCG@10 | full-ranking HR@10 | full NDCG@10 |",
        "|---|---|---|---|---|---|---|",
    ]
    for k in keys:
        paper = PAPER_CLEAN.get(k, (None, None))
        p = [f"{x:.2f}" if x is not None else "" for x in paper]
        lines.append(
            f"| {k} | {pct(res.get(f'{k}/clean/hr@10'))} | {pct(res.get(f'{k}/clean/ndcg@10'))} | {p[0]} | {p[1]} | "
            f"{pct(res.get(f'full/{k}/clean/hr@10'))} | {pct(res.get(f'full/{k}/clean/ndcg@10'))} |"
        )
    eps = sorted({float(k.split("/")[3]) for k in res if "/fgsm/" in k})
    lines += ["", "## HR@10 (%) under the FGSM weight attack (the eval users; paper in brackets)", ""]
    lines += [
        "| model / defense | no attack | " + " | ".join(f"{e:g}" for e in eps) + " |",
        "|---" * (len(eps) + 2) + "|",
    ]
    for k in keys:
        cells = []
        for e in eps:
            ours = pct(res.get(f"{k}/fgsm/{e:g}/hr@10"))
            paper = PAPER_FGSM.get(k)
            cells.append(f"{ours} ({paper[PAPER_EPS.index(e)]:.2f})" if paper and e in PAPER_EPS else ours)
        lines.append(f"| {k} | {pct(res.get(f'{k}/clean_eval_users/hr@10'))} | " + " | ".join(cells) + " |")
    for name, t in res["meta"]["training"].items():
        if "layer_robustness" in t:
            lines += ["", f"## Per-matrix robustness scores of {name} (loss increase; higher = less robust)", ""]
            lines += ["| matrix | score | fine-tuned |", "|---|---|---|"]
            lines += [
                f"| {n} | {s:.4f} | {'yes' if n in t['fine_tuned'] else ''} |" for n, s in t["layer_robustness"].items()
            ]
            if t.get("interpolation"):
                lines += ["", f"Interpolation weight chosen: a = {t['interpolation']['alpha']}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    args, scenario, cells, study, wall = run_reproduction(
        __doc__,
        "configs/study/ml1m_robustness_ncf_cpu.yaml",
        "runs/rawpft_ml1m_ncf",
        lambda ap: ap.add_argument("--second", help="an earlier results JSON (another protocol) to set beside"),
    )
    res = results_json(cells, study, wall)
    text = report(res, scenario.columns())
    if args.second:
        other = json.loads(Path(args.second).read_text())
        res["meta"]["second_protocol"] = {"file": args.second, "protocol": other["meta"].get("protocol")}
        text += "\n".join(second_protocol(res, other)) + "\n"
    print(text)
    write_results(
        args.results,
        res,
        f"# RAWP-FT on ML-1M\n\nConfig: `{args.config}`. Protocol: {res['meta']['protocol']}.\n\n" + text,
    )


if __name__ == "__main__":
    main()
