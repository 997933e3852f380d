"""Prepare time and peak RSS for the datasets in configs/data/benchmarks.yaml.

Each measurement runs in a fresh process (so peak RSS is that of one prepare); the median of
``--repeats`` runs is reported.  Usage: python bench/data_prepare.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

from common import machine, recipes, shared_data

from distrec.memory import peak_rss_mb


def prepare_once(name: str, out: str) -> dict:
    from distrec.data.dataset import prepare, write_prepared
    from distrec.data.preprocess import PrepareConfig
    from distrec.data.readers import read_source

    recipe = recipes()[name]
    t0 = time.perf_counter()
    raw = read_source(recipe["format"], shared_data() / recipe["root"])
    tables, meta = prepare(raw, PrepareConfig(**recipe["prepare"]), recipe["format"])
    write_prepared(tables, meta, out)
    return {"seconds": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(prepare_once(args.one, f"{tmp}/ds")))
        return
    print(f"machine: {machine()}")
    for name in recipes():
        runs = [
            json.loads(
                subprocess.run(
                    [sys.executable, __file__, "--one", name], check=True, capture_output=True, text=True
                ).stdout
            )
            for _ in range(args.repeats)
        ]
        secs = [r["seconds"] for r in runs]
        rss = [r["peak_rss_mb"] for r in runs]
        print(
            f"{name}: prepare median {statistics.median(secs):.2f}s (runs {', '.join(f'{s:.2f}' for s in secs)}), "
            f"peak RSS median {statistics.median(rss):.0f} MB"
        )


if __name__ == "__main__":
    main()
