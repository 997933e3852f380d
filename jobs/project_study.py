"""A finished study's wall time projected onto another cluster from the unit costs it measured
(``distrec.study.projection``): ``--nodes`` nodes of ``--cpus`` CPUs (and ``--gpus`` GPUs) each.

    python jobs/project_study.py configs/study/ml1m_defense_cpu.yaml --out runs/study_ml1m_defense_cpu \
        --nodes 1 2 4 16 --cpus 1
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distrec.study import load_study  # noqa: E402
from distrec.study.engine import StageResources  # noqa: E402
from distrec.study.projection import measured_seconds, project  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--out", required=True, help="the finished study's folder")
    ap.add_argument("--nodes", type=int, nargs="+", default=[16])
    ap.add_argument("--cpus", type=float, default=1, help="CPUs a node")
    ap.add_argument("--gpus", type=float, default=0, help="GPUs a node")
    ap.add_argument("--overhead-s", type=float, default=0.0, help="seconds the engine adds to every unit")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    scenario = load_study(args.config)
    out = str(Path(args.out).resolve()) if "://" not in args.out else args.out
    units = scenario.plan(out)
    try:
        seconds = measured_seconds(units, out)
    except FileNotFoundError as exc:
        raise SystemExit(f"project_study: {exc}") from None
    rows, node = [], StageResources(args.cpus, args.gpus)
    for n in args.nodes:
        p = project(units, seconds, scenario.config.resources, [node] * n, args.overhead_s)
        rows.append({"nodes": n, "cpus_per_node": args.cpus, **vars(p), "utilisation": p.utilisation(n * args.cpus)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    first = rows[0]
    print(f"{len(units)} units, {first['busy_s'] / 3600:.2f} unit-hours, critical path {first['critical_path_s']:.0f}s")
    print("| nodes x CPUs | projected wall | utilisation |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r['nodes']} x {r['cpus_per_node']:g} | {r['wall_s'] / 60:.1f} min | {100 * r['utilisation']:.0f}% |")


if __name__ == "__main__":
    main()
