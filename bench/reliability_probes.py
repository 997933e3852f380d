"""The reliability probes of docs/reliability.md, rerun as a user would: each is a ``distrec`` command on a
small study, after a fault or with a bad input; prints the Markdown table (probe, command, exit code,
seconds, what it said).

    .venv/bin/python bench/reliability_probes.py [--workdir DIR] > table.md
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

STUDY = {
    "dataset": {"synthetic": {"n_users": 150, "n_items": 80, "avg_degree": 10, "image_size": 0, "seed": 0}},
    "threat": {"n_fake": 4, "n_targets": 2, "target_bucket": "torso", "seed": 0},
    "surrogates": {"wrmf": {"factors": 8, "iterations": 3}},
    "attacks": [{"name": "random"}, {"name": "revadv", "config": {"outer_steps": 1, "lr": 2.0}}],
    "victims": {"wrmf": {"factors": 8, "iterations": 4}},
    "seeds": [0],
    "resources": {"craft": {"num_cpus": 1}, "cell": {"num_cpus": 1}},
}
ROWS: list[tuple[str, str, int, float, str]] = []


def distrec(*args: str, probe: str, wd: Path, shown: str | None = None) -> subprocess.CompletedProcess:
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "distrec.cli", *args], cwd=wd, capture_output=True, text=True, timeout=600
    )
    lines = done.stderr.replace("\r", "\n").splitlines()  # a progress bar's redraws share a line with a note
    said = [
        line[line.index(m) :]
        for line in lines
        for m in ("distrec:", "[distrec]")
        if m in line and not line.startswith(" ")
    ][:6]
    last = [line for line in done.stdout.splitlines() if "cells run" in line]
    ROWS.append(
        (
            probe,
            "distrec " + " ".join(args),
            done.returncode,
            time.perf_counter() - t0,
            " / ".join(said + last) or shown or "",
        )
    )
    return done


def write(path: Path, config: dict) -> str:
    path.write_text(yaml.safe_dump(config))
    return path.name


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", help="folder for the probes' files (default: a temporary one)")
    wd = Path(parser.parse_args().workdir or tempfile.mkdtemp(prefix="distrec-probes-"))
    wd.mkdir(parents=True, exist_ok=True)
    study = write(wd / "study.yaml", STUDY)
    distrec("study", study, "--out", "run", probe="a small study, first run", wd=wd)
    seven = write(wd / "seed7.yaml", dict(STUDY, dataset={"synthetic": dict(STUDY["dataset"]["synthetic"], seed=7)}))
    distrec("study", seven, "--out", "run", probe="the synthetic seed changed 0 -> 7, same --out", wd=wd)

    newest = lambda pattern: sorted((wd / "run").glob(pattern), key=lambda p: -p.stat().st_mtime)  # noqa: E731  (the seed-7 run's)
    cells = newest("cell/*.json")[:3]
    cells[0].write_text(cells[0].read_text()[:30])
    craft = next(p for p in newest("craft/*.json") if "revadv" in p.read_text())
    (craft.with_suffix("") / "metadata.json").unlink()
    ckpt = wd / "run" / "checkpoints" / cells[1].stem / "model" / "model.safetensors"
    ckpt.write_bytes(b"garbage")
    cells[1].unlink()
    distrec(
        "study",
        seven,
        "--out",
        "run",
        probe="a torn result JSON, a craft without its metadata.json, a garbage checkpoint",
        wd=wd,
    )

    for n in ("0", "1"):
        sweep = {
            "study": study,
            "search": {"attacks.1.config.lr": {"type": "uniform", "low": 0.5, "high": 3.0}},
            "objective": {"metric": "t_hr@20"},
            "num_samples": 2,
        }
        distrec(
            "sweep",
            write(wd / "sweep.yaml", sweep),
            "--out",
            "sweep",
            "--num-cpus",
            n,
            probe=f"sweep --num-cpus {n}",
            wd=wd,
        )
    sweep = {
        "study": study,
        "search": {"attacks.1.config.lr": {"type": "uniform", "low": 0.5, "high": 3.0}},
        "objective": {"metric": "t_hr@21"},
    }
    distrec("sweep", write(wd / "typo.yaml", sweep), "--out", "sweep", probe="a typo in objective.metric", wd=wd)
    params = []
    for n in (3, 4):
        sweep = {
            "study": study,
            "search": {"attacks.1.config.lr": {"type": "uniform", "low": 0.5, "high": 3.0}},
            "objective": {"metric": "t_hr@20"},
            "num_samples": n,
        }
        distrec(
            "sweep",
            write(wd / "grow.yaml", sweep),
            "--out",
            "grow",
            "--num-cpus",
            "2",
            probe=f"a sweep extended to {n} trials",
            wd=wd,
        )
        params.append(
            [
                round(t["params"]["attacks.1.config.lr"], 4)
                for t in json.loads((wd / "grow" / "sweep.json").read_text())["trials"]
            ]
        )
    ROWS[-1] = (*ROWS[-1][:4], ROWS[-1][4] + f"; trial lr values {params[0]} -> {params[1]}")

    backdoor = {
        "scenario": "backdoor",
        "dataset": {
            "synthetic": {"n_users": 300, "n_items": 120, "avg_degree": 14, "image_size": 0, "seed": 2},
            "prepare": {"split": "loo", "valid_ratio": 0.1},
        },
        "model": {"dim": 16, "layers": 1, "heads": 1, "max_len": 20, "epochs": 1},
        "group": {"attribute": "income", "value": 1},
    }
    distrec(
        "study",
        write(wd / "backdoor.yaml", backdoor),
        "--out",
        "bd",
        probe="backdoor: an unknown group attribute",
        wd=wd,
    )
    distrec(
        "study",
        write(
            wd / "bd2.yaml", dict(backdoor, group={"attribute": "segment", "value": 1}, targets={"items": [5, 100000]})
        ),
        "--out",
        "bd",
        probe="backdoor: a target outside the catalogue",
        wd=wd,
    )
    (wd / "a_file").write_text("x")
    distrec("study", study, "--out", "a_file", probe="--out is a file", wd=wd)
    distrec("study", study, "--out", "/proc/distrec", probe="--out on a read-only file system", wd=wd)
    distrec("study", study, "--out", "s3://distrec-probe-bucket/run", probe="--out s3:// with no network", wd=wd)
    distrec(
        "data",
        "prepare",
        "ml-100k",
        "--root",
        "missing",
        "--out",
        "s3://distrec-probe-bucket/ds",
        probe="data prepare to s3:// with no network",
        wd=wd,
    )
    forged = wd / "forged"
    forged.mkdir(exist_ok=True)
    (forged / "config.json").write_text('{"name": "c2f2", "config": {}}')
    (forged / "model.safetensors").write_bytes(b"\x00" * 64)
    distrec(
        "rank",
        "attack",
        "--model",
        "forged",
        "--data",
        "run",
        "--attack",
        "CA+",
        "--eps",
        "0.01",
        probe="a forged checkpoint",
        wd=wd,
    )
    (wd / "dup.yaml").write_text("victims:\n  wrmf: {factors: 8}\n  wrmf: {factors: 16}\n")
    distrec("study", "dup.yaml", "--out", "dup", probe="a YAML file with a duplicate key", wd=wd)

    for sig in (signal.SIGTERM, signal.SIGKILL):
        proc = subprocess.Popen(
            [sys.executable, "-m", "distrec.cli", "study", seven, "--out", f"killed-{sig.name}"],
            cwd=wd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        seen, t0 = {}, time.perf_counter()
        while (
            proc.poll() is None and not (wd / f"killed-{sig.name}" / "cell").exists() and time.perf_counter() - t0 < 300
        ):
            seen.update({p.pid: p for p in psutil.Process(proc.pid).children(recursive=True)})
            time.sleep(0.05)
        seen.update({p.pid: p for p in psutil.Process(proc.pid).children(recursive=True)})
        proc.send_signal(sig)
        proc.wait()
        time.sleep(15)
        left = [p for p in seen.values() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        ROWS.append(
            (
                f"the driver killed with {sig.name} while its units run",
                f"kill -{sig.name[3:]} <distrec study>",
                proc.returncode,
                15.0,
                f"{len(seen)} processes it started, {len(left)} left 15 s later",
            )
        )

    print("| probe | command | exit | s | what distrec said |\n|---|---|---|---|---|")
    for probe, command, code, seconds, said in ROWS:
        said = said.replace(str(wd) + "/", "").replace("|", "\\|")
        print(f"| {probe} | `{command}` | {code} | {seconds:.1f} | {said[:400]} |")
    shutil.rmtree(wd, ignore_errors=True)


if __name__ == "__main__":
    main()
