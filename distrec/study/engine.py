"""The study engine: runs a scenario's content-addressed units on Ray and writes the study's outputs.

A scenario (:mod:`distrec.study.scenario`) turns a validated config into :class:`Unit` s, each of one
stage (``train``, ``craft``, ``cell``, ...), with the ids of the units whose results it needs. The
engine alone decides where and when they run:

- scheduling: every unit is a Ray task with its stage's ``num_cpus`` / ``num_gpus``; a unit's
  dependencies are passed as object refs, so Ray starts it as soon as they are done;
- resume: a unit's result is ``<out>/<stage>/<id>.json``; a unit whose result exists is not run again,
  so an interrupted or extended study computes only what is missing;
- storage: every file goes through :mod:`distrec.distributed.storage` (a local folder or any
  ``pyarrow.fs`` URI);
- fault tolerance: a task whose worker process dies is retried (``max_retries``); models a unit
  trains are checkpointed with :meth:`UnitContext.checkpoint`, so the retry restores them;
- progress: one bar per stage; outputs: :mod:`distrec.study.outputs`.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field

import ray
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
from tqdm.auto import tqdm

from distrec.distributed import storage

CRASH_ENV = "DISTREC_FAULT_INJECTION_UNIT"
# units take their stage's resources from the cluster, also when the study runs inside a Ray Tune trial
OUTSIDE_PLACEMENT_GROUPS = PlacementGroupSchedulingStrategy(placement_group=None)


@dataclass
class Unit:
    """One piece of work: ``stage``, content ``id``, ``payload`` (what the scenario needs to run it),
    ``deps`` (name -> id of a unit whose result it receives) and a human-readable ``label``."""

    stage: str
    id: str
    payload: dict
    deps: dict[str, str] = field(default_factory=dict)
    label: str = ""


@dataclass
class StageResources:
    """Ray resources of each task of a stage."""

    num_cpus: float = 1
    num_gpus: float = 0


class UnitContext:
    """What a running unit may use: its output folder, model checkpoints, a per-process cache."""

    _cache: dict = {}

    def __init__(self, out: str, unit: Unit, threads: int):
        self.out, self.unit, self.threads = out, unit, threads
        self.notes: list[str] = []  # said by the driver when the unit finishes (a worker's output is not shown)

    @property
    def folder(self) -> str:
        """A folder for the unit's artifacts (poisoned data, trained models, adversarial images)."""
        return f"{self.out}/{self.unit.stage}/{self.unit.id}"

    def cached(self, key: str, build):
        """``build()`` once per worker process for ``key`` (datasets, loaded models)."""
        if key not in self._cache:
            if len(self._cache) > 8:
                self._cache.clear()
            self._cache[key] = build()
        return self._cache[key]

    def checkpoint(self, name: str, train, save, load):
        """The model ``name`` of this unit: restored with ``load(local_dir)`` when its checkpoint exists,
        else ``train()``, saved with ``save(model, local_dir)`` and uploaded. Returns (model, restored)."""
        uri = f"{self.out}/checkpoints/{self.unit.id}/{name}"
        if storage.exists(f"{uri}/.complete"):
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    return load(storage.download(uri, tmp)), True
            except Exception as exc:  # an unreadable checkpoint costs a retraining, never the study
                why = (
                    getattr(exc, "reason", None) or (str(exc).splitlines() or [type(exc).__name__])[0][:300]
                )  # not the download's temporary path
                self.notes.append(discard(uri, why, "retraining", say=False))
        storage.delete(uri)  # a half-uploaded or discarded checkpoint
        model = train()
        with tempfile.TemporaryDirectory() as tmp:
            save(model, tmp)
            storage.upload(tmp, uri)
        storage.write_text(f"{uri}/.complete", "")  # after every file: a half-uploaded checkpoint is not restored
        _maybe_crash(self.unit.id)
        return model, False


def _maybe_crash(unit_id: str) -> None:
    """``DISTREC_FAULT_INJECTION_UNIT=<unit id>:<marker file>`` makes the worker exit right after that
    unit's checkpoint is written, once (the marker records that it did): for reliability tests."""
    target, _, marker = os.environ.get(CRASH_ENV, "").partition(":")
    if target == unit_id and marker and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)


class StudyError(RuntimeError):
    """A unit of the study failed; the results of the units that finished are kept."""


def discard(uri: str, why: str, then: str = "recomputing", say: bool = True) -> str:
    """The line that says a stored file is unusable and what happens instead (printed unless ``say`` is False)."""
    line = f"[distrec] discarded {uri}: {why}; {then}"
    if say:
        print(line, file=sys.stderr, flush=True)
    return line


def result_uri(out: str, unit: Unit) -> str:
    return f"{out}/{unit.stage}/{unit.id}.json"


def stored_result(out: str, unit: Unit) -> dict | None:
    """The unit's stored result, or None when it has none or it is unusable (unreadable JSON, another
    unit's, or an ``artifacts`` file it lists is missing): such a result is discarded with a line and the
    unit runs again."""
    uri = result_uri(out, unit)
    if not storage.exists(uri):
        return None
    try:
        result = json.loads(storage.read_text(uri))
    except ValueError as exc:
        discard(uri, f"unreadable JSON ({exc})")
        return None
    if not isinstance(result, dict) or result.get("unit_id", unit.id) != unit.id:
        discard(uri, "not this unit's result")
        return None
    missing = [a for a in result.get("artifacts", []) if not storage.exists(a)]
    if missing:
        discard(uri, f"its artifact {missing[0]} is missing")
        return None
    return result


@ray.remote
def _run_unit(scenario, out: str, unit: Unit, dep_names: list[str], threads: int, *dep_results) -> dict:
    import torch

    torch.set_num_threads(max(1, threads))
    t0 = time.perf_counter()
    ctx = UnitContext(out, unit, threads)
    result = scenario.run(unit, dict(zip(dep_names, dep_results)), ctx)
    if ctx.notes:
        result = dict(result, notes=ctx.notes)
    result = dict(
        result,
        unit_id=unit.id,
        stage=unit.stage,
        label=unit.label,
        unit_seconds=round(time.perf_counter() - t0, 3),
        host=socket.gethostname(),
        pid=os.getpid(),
    )
    storage.write_text(result_uri(out, unit), json.dumps(result, indent=2, default=str))
    return result


def _ordered(units: list[Unit]) -> list[Unit]:
    """Units with every dependency before its dependents; unknown or cyclic dependencies are errors."""
    by_id = {u.id: u for u in units}
    order, state = [], {}

    def visit(u: Unit) -> None:
        if state.get(u.id) == "done":
            return
        if state.get(u.id) == "visiting":
            raise ValueError(f"study units form a cycle through {u.stage} {u.label or u.id}")
        state[u.id] = "visiting"
        for dep in u.deps.values():
            if dep not in by_id:
                raise ValueError(f"{u.stage} unit {u.label or u.id} depends on unknown unit {dep}")
            visit(by_id[dep])
        state[u.id] = "done"
        order.append(u)

    for u in units:
        visit(u)
    return order


def execute(
    scenario,
    units: list[Unit],
    out: str,
    resources: dict[str, StageResources],
    progress: bool = True,
    max_retries: int = 3,
    on_result=None,
) -> tuple[dict[str, dict], dict[str, dict]]:
    """Run every unit whose result is missing; returns (results by unit id, counts per stage).
    ``on_result(unit, result)`` is called in the driver as each unit finishes (sweeps report through it)."""
    units = _ordered(list({u.id: u for u in units}.values()))
    results = {u.id: r for u in units if (r := stored_result(out, u)) is not None}
    stages = list(dict.fromkeys(u.stage for u in units))
    counts = {
        s: {
            "total": sum(u.stage == s for u in units),
            "skipped": sum(u.stage == s and u.id in results for u in units),
            "run": 0,
        }
        for s in stages
    }
    pending = _submit([u for u in units if u.id not in results], scenario, out, resources, results, max_retries)
    bars = {
        s: tqdm(
            total=c["total"],
            initial=c["skipped"],
            desc=s,
            unit="unit",
            disable=not progress or c["total"] == c["skipped"],
            leave=True,
        )
        for s, c in counts.items()
    }
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            unit = pending.pop(done[0])
            try:
                results[unit.id] = ray.get(done[0])
            except ray.exceptions.RayTaskError as exc:
                for ref in pending:
                    ray.cancel(ref)
                raise StudyError(
                    f"{unit.stage} {unit.label or unit.id} failed: {exc.cause!r}; finished units are kept, rerun to "
                    "resume"
                ) from exc.cause
            counts[unit.stage]["run"] += 1
            bars[unit.stage].update(1)
            for note in results[unit.id].get("notes", []):
                tqdm.write(note, file=sys.stderr)
            if on_result is not None:
                on_result(unit, results[unit.id])
    except KeyboardInterrupt:  # Ctrl-C stops the work too, not only the driver; finished units are kept
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        for bar in bars.values():
            bar.close()
    return {u.id: results[u.id] for u in units}, counts


def _submit(
    todo: list[Unit], scenario, out: str, resources: dict[str, StageResources], results: dict, max_retries: int
) -> dict:
    """One Ray task per unit to run, in dependency order, each given its finished dependencies' results or
    their tasks' refs; returns ref -> unit."""
    if not todo:
        return {}
    env = {CRASH_ENV: os.environ[CRASH_ENV]} if os.environ.get(CRASH_ENV) else None
    scenario_ref = ray.put(scenario)
    refs, pending = {}, {}
    for u in todo:
        res = resources.get(u.stage, StageResources())
        args = [results[d] if d in results else refs[d] for d in u.deps.values()]
        opts = {
            "num_cpus": res.num_cpus,
            "num_gpus": res.num_gpus,
            "max_retries": max_retries,
            "name": f"{u.stage}:{u.label}"[:100],
            "scheduling_strategy": OUTSIDE_PLACEMENT_GROUPS,
            **({"runtime_env": {"env_vars": env}} if env else {}),
        }
        refs[u.id] = _run_unit.options(**opts).remote(
            scenario_ref, out, u, list(u.deps), max(1, int(res.num_cpus)), *args
        )
        pending[refs[u.id]] = u
    return pending
