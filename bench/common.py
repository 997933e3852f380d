"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    path = Path(os.environ.get("DISTREC_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        raise SystemExit(f"real datasets not found at {path}: set DISTREC_SHARED_DATA")
    return path


def recipes() -> dict:
    return yaml.safe_load((REPO / "configs/data/benchmarks.yaml").read_text())


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` knows: seconds from different
    session machines are only comparable when the record says which CPU ran them."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine() -> str:
    return f"{cpu_model()} ({platform.machine()}), {os.cpu_count()} cores, Python {platform.python_version()}"


def write_report(path: Path, text: str) -> None:
    """Write a results report, keeping the ``## Findings`` section a person wrote into an earlier version."""
    path = Path(path)
    findings = ""
    if path.exists() and "\n## Findings" in path.read_text():
        findings = "\n## Findings" + path.read_text().split("\n## Findings", 1)[1]
    path.write_text(text.rstrip("\n") + "\n" + findings)


def run_reproduction(description: str, config: str, out: str, extra=None):
    """A reproduction job's shared part: parse ``--config --out --results --num-cpus`` (and ``extra(parser)``),
    validate the study whole, run it through the engine (resumable) and read its cells and ``study.json``.
    Returns (args, scenario, cells, study, wall seconds)."""
    import argparse
    import json
    import time

    import pyarrow.parquet as pq

    from distrec.study import load_study, run_study

    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / config))
    ap.add_argument("--out", default=str(REPO / out))
    ap.add_argument("--results", help="write <results>.json and <results>.md here")
    ap.add_argument("--num-cpus", type=int, default=None)
    if extra is not None:
        extra(ap)
    args = ap.parse_args()
    scenario = load_study(args.config)  # validated whole before any work
    t0 = time.perf_counter()
    run_study(args.config, args.out, progress=True, num_cpus=args.num_cpus, scenario=scenario)
    cells = pq.read_table(Path(args.out) / "results.parquet").to_pylist()
    study = json.loads((Path(args.out) / "study.json").read_text())
    return args, scenario, cells, study, time.perf_counter() - t0


def write_results(prefix: str | None, results: dict, markdown: str) -> None:
    """``<prefix>.json`` and ``<prefix>.md`` (keeping its Findings section); nothing without a prefix."""
    import json

    if not prefix:
        return
    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{prefix}.json").write_text(json.dumps(results, indent=2, sort_keys=True, default=str) + "\n")
    write_report(Path(f"{prefix}.md"), markdown)
