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


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def write_report(path: Path, text: str) -> None:
    """Write a results report, keeping the ``## Findings`` section a person wrote into an earlier version."""
    path = Path(path)
    findings = ""
    if path.exists() and "\n## Findings" in path.read_text():
        findings = "\n## Findings" + path.read_text().split("\n## Findings", 1)[1]
    path.write_text(text.rstrip("\n") + "\n" + findings)
