"""Backdoor reproduction (docs/methods.md section 6): runs a backdoor study through the study engine (resumable)
and writes the issue's JSON and a report.

    python jobs/repro_backdoor.py --config configs/backdoor/ml100k.yaml --out runs/backdoor_ml100k \
        --results docs/results/backdoor_ml100k

JSON keys: ``<attack>/<mode>/<group>/hr@K`` and ``/ndcg@K``; attack ``clean``, ``bra``, ``pea`` (the first
of each name in the config; further ones as ``bra@<rate>``), mode ``direct``, ``finetune``,
``finetune_reinit``, ``prompt``, group ``target``, ``others``, ``overall``; fractions averaged over seeds;
``sasrec/<dataset>/hr@K`` = the clean model's overall accuracy on the downstream users used as is; ``meta``."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import machine, run_reproduction, write_results  # noqa: E402
from distrec.study.scenarios.backdoor import CLEAN, attack_label  # noqa: E402


def row_keys(attacks: list[dict]) -> dict[str, str]:
    """Study row label -> the JSON's attack name."""
    keys, seen = {CLEAN: CLEAN}, set()
    for spec in attacks:
        name = spec["name"]
        keys[attack_label(spec)] = name if name not in seen else f"{name}@{spec.get('rate')}"
        seen.add(name)
    return keys


def results_json(cells: list[dict], study: dict, dataset: str, wall: float) -> dict:
    cfg = study["config"]
    names = row_keys(cfg["attacks"])
    metrics = [f"{m}@{k}" for k in cfg["ks"] for m in ("hr", "ndcg")]
    groups: dict = {}
    for c in cells:
        groups.setdefault((c["row"], c["column"]), []).append(c)
    out = {}
    for (row, column), group in sorted(groups.items()):
        for m in metrics:
            values = [g[m] for g in group if g.get(m) is not None]
            out[f"{names[row]}/{column}/{m}"] = round(sum(values) / len(values), 5) if values else None
    for m in metrics:
        out[f"sasrec/{dataset}/{m}"] = out.get(f"clean/direct/overall/{m}")
    out["meta"] = {
        "attacks": {names[attack_label(s)]: s for s in cfg["attacks"]},
        "config": cfg,
        "config_file": study["config_file"],
        "seeds": cfg["seeds"],
        "pretraining": study["summary"]["pretraining"],
        "wall_seconds_last_run": round(wall, 1),  # a resumed run computes only what is missing
        "pretrain_seconds": round(sum(p["fit_seconds"] for p in study["summary"]["pretraining"].values()), 1),
        "machine": machine(),
    }
    return out


def ratio(a, b) -> str:
    if a is None or b is None:
        return "n/a"
    return f"{a / b:.1f}x" if b > 0 else ("inf" if a > 0 else "1.0x")


def report(res: dict, modes: list[str], k: int = 10) -> str:
    attacks = ["clean", *res["meta"]["attacks"]]
    lines = [
        f"## Exposure of the targets, HR@{k} (%) per downstream mode; in brackets the ratio to the clean model",
        "",
    ]
    header = [f"{m}/{g}" for m in modes for g in ("target", "others", "overall")]
    lines += ["| attack | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
    for a in attacks:
        cells = []
        for h in header:
            v, base = res.get(f"{a}/{h}/hr@{k}"), res.get(f"clean/{h}/hr@{k}")
            cells.append("n/a" if v is None else f"{100 * v:.2f}" + ("" if a == "clean" else f" ({ratio(v, base)})"))
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    args, scenario, cells, study, wall = run_reproduction(
        __doc__,
        "configs/backdoor/ml100k.yaml",
        "runs/backdoor_ml100k",
        lambda ap: ap.add_argument("--dataset", help="name in the sasrec/<dataset> keys (default: the config's stem)"),
    )
    res = results_json(cells, study, args.dataset or Path(args.config).stem, wall)
    text = report(res, scenario.config.modes)
    print(text)
    write_results(
        args.results,
        res,
        f"# Backdoors in pre-trained SASRec: {Path(args.config).stem}\n\nConfig: `{args.config}`. Protocol: "
        f"{scenario.protocol()}.\n\n" + text,
    )


if __name__ == "__main__":
    main()
