"""PORE's ensemble as engine units: base models per hour with 1 and 2 Ray workers (ML-100K, ItemKNN base
models on 20 users each, the no-attack and a random-attack row), each run from an empty output folder.

    .venv/bin/python bench/pore_ensemble.py --models 400 --per-unit 25
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import machine, shared_data

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=400)
    ap.add_argument("--per-unit", type=int, default=25)
    args = ap.parse_args()
    study = {
        "scenario": "poisoning",
        "dataset": {
            "format": "ml-100k",
            "root": str(shared_data() / "ml-100k"),
            "prepare": {"split": "ratio", "test_ratio": 0.2, "seed": 0},
        },
        "threat": {"preset": "distrec", "seed": 0},
        "attacks": [{"name": "random"}],
        "victims": {"itemknn": {"neighbours": 50}},
        "defenses": {"pore": {"n_models": args.models, "subsample": 20, "top_n": 50, "models_per_unit": args.per_unit}},
        "columns": ["itemknn+pore"],
        "resources": {"craft": {"num_cpus": 1}, "base": {"num_cpus": 1}, "cell": {"num_cpus": 1}},
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp, "pore.yaml")
        config.write_text(yaml.safe_dump(study))
        for cpus in (1, 2):
            out = Path(tmp, f"out{cpus}")
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "distrec.cli", "study", str(config), "--out", str(out), "--num-cpus", str(cpus)],
                check=True,
                capture_output=True,
                cwd=REPO,
            )
            seconds = time.perf_counter() - t0
            base = [json.loads(p.read_text()) for p in (out / "base").glob("*.json")]
            unit_seconds = sorted(b["seconds"] for b in base)
            models = sum(len(b["models"]) for b in base)
            rows.append(
                {
                    "workers": cpus,
                    "base_models": models,
                    "wall_s": round(seconds, 1),
                    "models_per_hour": round(models / seconds * 3600),
                    "median_unit_s": unit_seconds[len(unit_seconds) // 2],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"speedup_2_vs_1": round(rows[0]["wall_s"] / rows[1]["wall_s"], 2), "machine": machine()}))


if __name__ == "__main__":
    main()
