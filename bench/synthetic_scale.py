"""Time and peak RSS of generating and preparing a Gowalla-shaped synthetic set at growing sizes.

Gowalla's shape (LightGCN split): 34.4 interactions a user, 1.37 items a user. Each size runs in a fresh
process (peak RSS is that run's); per stage the median of ``--repeats`` runs, and the log-log slope of seconds
against interactions (1 = linear). Usage:

    python bench/synthetic_scale.py --sizes 1e6 3e6 1e7 --repeats 3 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from common import machine

from distrec.memory import peak_rss_mb

DEGREE, ITEMS_PER_USER = 34.4, 1.37


def shape(size: float) -> dict:
    n_users = int(size / DEGREE)
    return dict(n_users=n_users, n_items=int(ITEMS_PER_USER * n_users), avg_degree=int(round(DEGREE)))


def run_once(size: float, out: str) -> dict:
    from distrec.data.dataset import prepare, write_prepared
    from distrec.data.preprocess import PrepareConfig
    from distrec.data.synthetic import make_synthetic

    t0 = time.perf_counter()
    raw = make_synthetic(**shape(size), image_size=0, sampler="linear", seed=0)
    t1 = time.perf_counter()
    tables, meta = prepare(raw, PrepareConfig(split="ratio", test_ratio=0.2), "synthetic")
    t2 = time.perf_counter()
    write_prepared(tables, meta, out)
    t3 = time.perf_counter()
    return {
        "interactions": raw.interactions.num_rows,
        "generate_s": t1 - t0,
        "prepare_s": t2 - t1,
        "write_s": t3 - t2,
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=float, nargs="+", default=[1e6, 3e6, 1e7])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json")
    ap.add_argument("--one", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(run_once(args.one, f"{tmp}/data")))
        return
    rows = []
    for size in args.sizes:
        runs = [
            json.loads(
                subprocess.run(
                    [sys.executable, __file__, "--one", str(size)], capture_output=True, text=True, check=True
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            for _ in range(args.repeats)
        ]
        row = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        rows.append(row)
        print(
            f"{row['interactions']:>12,} interactions: generate {row['generate_s']:.1f} s, prepare "
            f"{row['prepare_s']:.1f} s, write {row['write_s']:.1f} s, peak RSS {row['peak_rss_mb']:.0f} MB",
            flush=True,
        )
    n = np.log([r["interactions"] for r in rows])
    slopes = {
        k: float(np.polyfit(n, np.log([r[k] for r in rows]), 1)[0]) for k in ("generate_s", "prepare_s", "write_s")
    }
    print("log-log slope of seconds against interactions: " + ", ".join(f"{k} {v:.2f}" for k, v in slopes.items()))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": machine(), "rows": rows, "slopes": slopes, "repeats": args.repeats}, fh, indent=2)


if __name__ == "__main__":
    main()
