"""``distrec study CONFIG --out URI``: read and check the whole config, then plan, run and write the study."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import pyarrow.fs as pafs

from distrec.config import ConfigError, check, load_yaml
from distrec.distributed import storage
from distrec.distributed.runtime import init_ray
from distrec.files import check_writable
from distrec.study.engine import StageResources, execute
from distrec.study.outputs import write_matrix, write_results
from distrec.study.scenario import SCENARIOS, Scenario


def load_study(path: str | Path) -> Scenario:
    """The study's scenario with its validated config: every key, name, range and path is checked
    here, before any Ray work or training."""
    return study_from_dict(load_yaml(path), str(path))


def study_from_dict(raw: dict, source: str) -> Scenario:
    """:func:`load_study` for a config already read (``source`` names it in errors)."""
    raw = dict(raw)
    name = raw.pop("scenario", "poisoning")
    if name not in SCENARIOS.names():
        raise ConfigError(f"{source}: scenario: unknown scenario {name!r}; registered: {', '.join(SCENARIOS.names())}")
    cls = SCENARIOS.get(name)
    scenario = cls(check(cls.Config, raw, source), source)
    for stage in scenario.config.resources:
        if stage not in cls.stages:
            raise ConfigError(
                f"{source}: resources.{stage}: unknown stage; the {name} scenario's stages: {', '.join(cls.stages)}"
            )
    scenario.check()
    return scenario


def _absolute(out: str) -> str:
    return out if "://" in str(out) else str(Path(out).resolve())


def run_study(
    config_path: str | Path,
    out: str,
    progress: bool = True,
    num_cpus: int | None = None,
    on_result=None,
    scenario: Scenario | None = None,
    store: str | None = None,
    in_cluster: bool = False,
    victim_hosts: bool = True,
) -> dict:
    """Run (or resume) the study; returns the output paths and the counts of units run and skipped per stage.
    ``store``: where units, checkpoints and the prepared data live (default ``out``); studies sharing a
    store share every unit they have in common (a sweep's trials do). ``in_cluster``: run from inside a
    Ray job whose cluster is already sized (a sweep trial), so the local CPUs are not checked.
    ``victim_hosts``: run the units that attack a trained victim in its host (the engine's default); False
    runs each as a task (the same results)."""
    scenario = scenario or load_study(config_path)
    out = _absolute(str(out))
    store = _absolute(store) if store else out
    if not in_cluster:
        check_resources(scenario, num_cpus)
    check_writable(out)
    if store != out:
        check_writable(store, "the unit store")
    check_previous_study(scenario, out)
    t0 = time.perf_counter()
    units = scenario.plan(store)  # data errors surface here, before Ray starts
    init_ray(num_cpus=num_cpus)
    results, counts = execute(
        scenario, units, store, scenario.config.resources, progress, on_result=on_result, victim_hosts=victim_hosts
    )
    cells = scenario.cells(results)
    paths = {
        "results": write_results(cells, out),
        **write_matrix(scenario, cells, out, f"{scenario.name} study {Path(str(config_path)).name}"),
    }
    cell_counts = counts.get("cell", {"total": 0, "run": 0, "skipped": 0})
    summary = dict(
        paths,
        scenario=scenario.name,
        summary=scenario.summary(results),
        cells=len(cells),
        cells_run=cell_counts["run"],
        cells_skipped=cell_counts["skipped"],
        stages=counts,
        seconds=round(time.perf_counter() - t0, 1),
    )
    study_json = {k: v for k, v in summary.items() if k != "matrix"}
    study_json.update(config=config_dict(scenario.config), config_file=str(config_path), study_json=f"{out}/study.json")
    storage.write_text(f"{out}/study.json", json.dumps(study_json, indent=2, default=str))
    return dict(summary, study_json=f"{out}/study.json")


def local_cpus(num_cpus: int | None) -> int | None:
    """The CPUs a local Ray gets (``--num-cpus`` or every core); None when joining a cluster."""
    if os.environ.get("RAY_ADDRESS"):
        return None
    return (os.cpu_count() or 1) if num_cpus is None else num_cpus


def check_resources(scenario: Scenario, num_cpus: int | None, reserved: float = 0.0, reserved_by: str = "") -> None:
    """Every stage's unit must fit the local Ray (beside ``reserved`` CPUs that sweep trials hold), or it
    would wait forever: an error naming the stage, its key and the numbers, before Ray starts."""
    if num_cpus is not None and num_cpus < 1:
        raise ConfigError(f"--num-cpus {num_cpus}: a local Ray needs at least 1 CPU")
    cpus = local_cpus(num_cpus)
    if cpus is None:
        return
    gpus = _local_gpus()
    flag = f"--num-cpus {num_cpus}" if num_cpus is not None else f"this machine's {cpus} CPUs"
    for stage in scenario.stages:
        res = scenario.config.resources.get(stage, StageResources())
        if res.num_cpus + reserved > cpus:
            held = f" beside the {reserved:g} CPUs {reserved_by}" if reserved else ""
            raise ConfigError(
                f"{scenario.source}: resources.{stage}.num_cpus: a {stage} unit needs {res.num_cpus:g} CPUs{held}, "
                f"more than {flag}; lower it or give more CPUs"
            )
        if res.num_gpus > gpus:
            raise ConfigError(
                f"{scenario.source}: resources.{stage}.num_gpus: a {stage} unit needs {res.num_gpus:g} GPUs; this "
                f"machine has {gpus}"
            )


def _local_gpus() -> int:
    import torch

    return torch.cuda.device_count()


def check_previous_study(scenario: Scenario, out: str) -> None:
    """A study rerun into a folder that holds another scenario's study is refused; one whose config
    differs is said in one line (units are matched by content id, so nothing stale is reused)."""
    uri = f"{out}/study.json"
    if not storage.exists(uri):
        return
    try:
        previous = json.loads(storage.read_text(uri))
    except ValueError:
        return  # rewritten at the end of this run
    if previous.get("scenario") not in (None, scenario.name):
        raise ConfigError(
            f"--out {out} holds a {previous['scenario']} study ({previous.get('config_file')}); this is a "
            f"{scenario.name} study: choose another --out"
        )
    changed = _changed_keys(previous.get("config") or {}, config_dict(scenario.config))
    if changed:
        shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
        print(
            f"[distrec] {out} was written by a config that differs in {shown}; only units whose content ids match are "
            "reused",
            file=sys.stderr,
            flush=True,
        )


def _changed_keys(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [
            k
            for key in sorted(set(a) | set(b), key=str)
            for k in _changed_keys(a.get(key), b.get(key), f"{prefix}{key}.")
        ]
    return [prefix.rstrip(".")] if a != b else []


def rewrite_outputs(config_path: str | Path, out: str) -> dict:
    """The matrix (Markdown, CSV, heatmap) written again from the cells in ``out/results.parquet``, with
    nothing run and no Ray: for a study whose outputs are kept without its units (docs/results)."""
    import pyarrow.parquet as pq

    scenario = load_study(config_path)
    fs, root = storage.resolve_uri(_absolute(str(out)))
    if fs.get_file_info(f"{root}/results.parquet").type == pafs.FileType.NotFound:
        raise ConfigError(f"{out}/results.parquet does not exist: run the study (without --outputs-only) first")
    with fs.open_input_file(f"{root}/results.parquet") as f:
        rows = pq.read_table(f, columns=["cell_id", "row", "column", "seed", "config", "metrics"]).to_pylist()
    cells = [dict(r, config=json.loads(r["config"]), metrics=json.loads(r["metrics"])) for r in rows]
    return write_matrix(scenario, cells, str(out), f"{scenario.name} study {Path(str(config_path)).name}")


def config_dict(config) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))
