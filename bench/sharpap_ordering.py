"""Where the SharpAP ordering (wrapped > plain on the transfer victims) holds: every committed poisoning
study's wrapped rows against the plain attack they wrap, seed by seed, from the results alone.

  python bench/sharpap_ordering.py [--results docs/results]

Per study, pair and victim: the mean paired difference in the study's headline metric (points) and on how
many seeds the wrapped row is stronger; then the totals on the surrogate's own family and on the transfer
victims, with a two-sided sign test over the comparisons (they are not all independent: a study's
victims share one poison). Results go to docs/benchmarks.md."""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import pyarrow.parquet as pq
from common import REPO

from distrec.study import load_study


def sign_test(wins: int, n: int) -> float:
    """Two-sided binomial sign test of ``wins`` of ``n`` against p = 1/2."""
    tail = sum(math.comb(n, k) for k in range(max(wins, n - wins), n + 1)) / 2**n
    return min(1.0, 2 * tail)


def comparisons(folder: Path) -> list[dict]:
    study = json.loads((folder / "study.json").read_text())
    scenario = load_study(REPO / study["config_file"])
    cells = pq.read_table(folder / "results.parquet", columns=["row", "column", "seed", "metrics"]).to_pylist()
    by = {(c["row"], c["column"], c["seed"]): json.loads(c["metrics"]) for c in cells}
    surrogates = set(scenario.config.surrogates)
    populations = {
        spec.row_label(sur)
        for spec in scenario.config.attacks
        if spec.population is not None
        for sur in scenario.surrogates_of(spec)
    }
    out = []
    for row, ref in scenario.pairs():
        for col in dict.fromkeys(c["column"] for c in cells):
            seeds = sorted(s for r, c, s in by if r == row and c == col and (ref, col, s) in by)
            diffs = [by[row, col, s][scenario.metric] - by[ref, col, s][scenario.metric] for s in seeds]
            if diffs:
                family = col.partition("+")[0] in surrogates
                kind = "population" if row in populations else "sharpap"
                out.append(
                    {
                        "study": folder.name,
                        "metric": scenario.metric,
                        "pair": f"{row} vs {ref}",
                        "kind": kind,
                        "victim": col,
                        "family": family,
                        "diffs": diffs,
                    }
                )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default=str(REPO / "docs/results"))
    a = ap.parse_args()
    os.chdir(REPO)  # the study configs name ../shared/data relative to the checkout
    rows = [
        c
        for folder in sorted(Path(a.results).glob("study_*"))
        if (folder / "results.parquet").exists()
        and json.loads((folder / "study.json").read_text())["scenario"] == "poisoning"
        for c in comparisons(folder)
    ]
    print(
        "| study | metric | pair | victim | paired difference (points) | wrapped stronger |\n|---|---|---|---|---|---|"
    )
    for r in rows:
        print(
            f"| {r['study'].removeprefix('study_')} | {r['metric']} | {r['pair']} | "
            f"{r['victim']}{' (surrogate family)' if r['family'] else ''} | "
            f"{100 * sum(r['diffs']) / len(r['diffs']):+.2f} | {sum(d > 0 for d in r['diffs'])}/{len(r['diffs'])} "
            "|"
        )
    for kind in ("sharpap", "population"):
        for family, name in ((False, "transfer victims"), (True, "the surrogate's own family")):
            diffs = [d for r in rows if r["family"] == family and r["kind"] == kind for d in r["diffs"]]
            if not diffs:
                continue
            wins, ties = sum(d > 0 for d in diffs), sum(d == 0 for d in diffs)
            print(
                f"{kind}, {name}: wrapped stronger in {wins} of {len(diffs)} seed-level comparisons ({ties} ties), "
                f"mean {100 * sum(diffs) / len(diffs):+.3f} points; sign test p = "
                f"{sign_test(wins, len(diffs) - ties):.3f}"
            )


if __name__ == "__main__":
    main()
