"""distrec beside ARLib on ARLib's own split: ARLib's fake profiles imported as a row, distrec's attacks as others,
every victim retrained clean and poisoned, and each cell scored by distrec's T-HR@K and by ARLib's definition
(``arlib_hr@K``, docs/methods.md section 2), with the number ARLib printed for its own run beside when its log
is given. Nothing of ARLib is vendored: point the job at a checkout where ARLib has run.

    python jobs/compare_arlib.py --arlib ~/ARLib --dataset ml-100k --poison BandwagonAttack_ml-100k_... \\
        --log ~/ARLib/log/LightGCN_BandwagonAttack_....log --out runs/compare_arlib --results docs/results/arlib

Reads ``DIR/data/clean/DATASET/{train,val,test}.txt`` (the split), ``DIR/data/clean/DATASET/targetItem_*.txt``
(ARLib's targets) and ``DIR/data/poison/POISON/TIMES/train.txt`` (its poisoned copy: the users the clean split
lacks are the fake profiles). The study's budget is ARLib's: as many fake users as it injected, as many items as
its longest profile (ARLib's bandwagon profiles exceed the average degree).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from distrec.config import ConfigError  # noqa: E402
from distrec.data.readers.selfrec import read_selfrec_profiles  # noqa: E402

K = 50


def arlib_inputs(arlib: Path, dataset: str, poison: str | None, times: int) -> dict:
    """The clean split, the targets and the poisoned training file of an ARLib run, checked to exist."""
    clean = arlib / "data" / "clean" / dataset
    if not (clean / "train.txt").exists():
        raise ConfigError(f"--arlib {arlib}: no data/clean/{dataset}/train.txt (is it an ARLib checkout?)")
    target_files = sorted(clean.glob("targetItem_*.txt"))
    if len(target_files) != 1:
        raise ConfigError(f"{clean}: expected one targetItem_*.txt written by ARLib's run, found {len(target_files)}")
    targets = [t.strip().strip("'\"") for t in target_files[0].read_text().split(",") if t.strip()]
    runs = sorted((arlib / "data" / "poison").glob("*"), key=lambda p: p.stat().st_mtime) if poison is None else []
    folder = arlib / "data" / "poison" / poison if poison else (runs[-1] if runs else None)
    poisoned = folder / str(times) / "train.txt" if folder else None
    if poisoned is None or not poisoned.exists():
        raise ConfigError(f"--poison: no poisoned train.txt at {poisoned or arlib / 'data' / 'poison'}")
    return {"clean": clean, "targets": targets, "poisoned": poisoned, "attack": folder.name.split("_")[0]}


def fake_profiles(inputs: dict) -> dict[str, list[str]]:
    clean_users = {line.split(" ", 1)[0] for line in (inputs["clean"] / "train.txt").read_text().splitlines() if line}
    profiles = read_selfrec_profiles(inputs["poisoned"], clean_users)
    if not profiles:
        raise ConfigError(f"{inputs['poisoned']}: no user beyond the clean split's: not a poisoned copy")
    return profiles


def comparison_study(inputs: dict, profiles_file: Path, profiles: dict, victims: list[str], seeds: list[int]) -> dict:
    """The poisoning study: ARLib's profiles as a row beside distrec's attacks, on ARLib's split and budget."""
    return {
        "scenario": "poisoning",
        "dataset": {"format": "selfrec", "root": str(inputs["clean"])},
        "threat": {
            "n_fake": len(profiles),
            "n_filler": max(len(p) for p in profiles.values()),
            "target_original_ids": inputs["targets"],
        },
        "attacks": [
            {"name": "import", "config": {"path": str(profiles_file)}, "label": f"arlib:{inputs['attack']}"},
            {"name": "bandwagon", "config": {"popular": "exact"}, "label": "bandwagon (exact fill)"},
            {"name": "bandwagon"},
            {"name": "revadv"},
            {"name": "pga"},
        ],
        "victims": {v: {} for v in victims},
        "seeds": seeds,
        "metric": f"t_hr@{K}",
        "peer_metrics": ["arlib"],
    }


def arlib_printed(log: Path) -> dict[int, dict[str, float]]:
    """The target metrics ARLib printed for its run, per K (the last block of each K: its average)."""
    found: dict[int, dict[str, float]] = {}
    pattern = r"Top (\d+)\s+HitRate : ([-\d.e]+)\s+Precision : ([-\d.e]+)\s+Recall : ([-\d.e]+)\s+NDCG : ([-\d.e]+)"
    for m in re.finditer(pattern, log.read_text(errors="replace")):
        found[int(m.group(1))] = {"HitRate": float(m.group(2)), "Recall": float(m.group(4))}
    return found


def table(cells: list[dict], printed: dict) -> str:
    """Per row and victim: distrec's T-HR@K, ARLib's definition computed by distrec, and ARLib's printed numbers."""
    groups: dict = {}
    for c in cells:
        groups.setdefault((c["row"], c["column"]), []).append(c)
    lines = [
        f"| row | victim | T-HR@{K} (distrec) | ARLib's HR@{K} (distrec) | ARLib printed Recall / HitRate |",
        "|---|---|---|---|---|",
    ]
    for (row, column), group in sorted(groups.items()):
        mean = lambda key: sum(g[key] for g in group) / len(group)  # noqa: E731
        own = printed.get(K) if row.startswith("arlib:") else None
        theirs = f"{100 * own['Recall']:.2f} / {100 * own['HitRate']:.2f}" if own else ""
        lines.append(
            f"| {row} | {column} | {100 * mean(f't_hr@{K}'):.2f} | {100 * mean(f'arlib_hr@{K}'):.2f} | {theirs} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arlib", required=True, type=Path, help="an ARLib checkout where ARLib has run")
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--poison", help="folder under data/poison (default: the newest)")
    ap.add_argument("--times", type=int, default=0, help="which of ARLib's repeated poisonings")
    ap.add_argument("--log", type=Path, help="ARLib's log of that run, for the numbers it printed")
    ap.add_argument("--victims", default="lightgcn,wrmf,bpr")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--out", required=True)
    ap.add_argument("--results", help="write <results>.json and <results>.md")
    ap.add_argument("--num-cpus", type=int)
    args = ap.parse_args()
    import pyarrow.parquet as pq
    import yaml

    from distrec.study import run_study

    inputs = arlib_inputs(args.arlib.expanduser(), args.dataset, args.poison, args.times)
    profiles = fake_profiles(inputs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    profiles_file = out / "arlib_profiles.txt"
    profiles_file.write_text("".join(" ".join(items) + "\n" for items in profiles.values()))
    study = comparison_study(
        inputs, profiles_file, profiles, args.victims.split(","), [int(s) for s in args.seeds.split(",")]
    )
    config = out / "study.yaml"
    config.write_text(yaml.safe_dump(study, sort_keys=False))
    run_study(config, str(out / "study"), num_cpus=args.num_cpus)
    cells = [dict(r, **json.loads(r["metrics"])) for r in pq.read_table(out / "study" / "results.parquet").to_pylist()]
    text = table(cells, arlib_printed(args.log) if args.log else {})
    print(text)
    if args.results:
        Path(f"{args.results}.md").write_text(
            f"# distrec beside ARLib ({inputs['attack']}, {args.dataset})\n\n{text}\n"
        )
        Path(f"{args.results}.json").write_text(json.dumps({"study": study, "cells": cells}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
