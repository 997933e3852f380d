"""The study engine: runs a scenario's content-addressed units on Ray and writes the study's outputs.

A scenario (:mod:`distrec.study.scenario`) turns a validated config into :class:`Unit` s, each of one
stage (``train``, ``craft``, ``cell``, ...), with the ids of the units whose results it needs. The
engine alone decides where and when they run:

- scheduling: every unit is a Ray task with its stage's ``num_cpus`` / ``num_gpus``; a unit's
  dependencies are passed as object refs, so Ray starts it as soon as they are done;
- victim hosts: the units of a scenario's ``hosted`` stages (those that attack or evaluate one trained
  victim) run in that victim's actor (:class:`VictimUnitHost`), which keeps it in memory from unit to unit;
- resume: a unit's result is ``<out>/<stage>/<id>.json``; a unit whose result exists is not run again,
  so an interrupted or extended study computes only what is missing;
- storage: every file goes through :mod:`distrec.distributed.storage` (a local folder or any
  ``pyarrow.fs`` URI);
- fault tolerance: a task whose worker process dies is retried (``max_retries``); models a unit
  trains are checkpointed with :meth:`UnitContext.checkpoint`, so the retry restores them;
- progress: one bar per stage; outputs: :mod:`distrec.study.outputs`.
"""

from __future__ import annotations

import itertools
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
CACHE_SIZE = 8  # entries of a worker's UnitContext.cached: datasets, models and what units derive from them
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
        """``build()`` once per worker process for ``key`` (datasets, loaded models); the process keeps the
        ``CACHE_SIZE`` most recently used."""
        if key in self._cache:
            self._cache[key] = self._cache.pop(key)  # most recently used last
        else:
            while len(self._cache) >= CACHE_SIZE:
                del self._cache[next(iter(self._cache))]
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
    """``DISTREC_FAULT_INJECTION_UNIT=<unit id>:<marker file>`` makes the worker (or victim host) exit right
    after that unit's checkpoint is written, or before the result of a unit without one is stored, once (the
    marker records that it did): for reliability tests."""
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


def run_unit(scenario, out: str, unit: Unit, dep_names: list[str], threads: int, *dep_results, ran_in="task") -> dict:
    """Run one unit and store its result; ``ran_in``: a Ray ``task`` or a ``victim host``."""
    import torch

    torch.set_num_threads(max(1, threads))
    started, t0 = time.time(), time.perf_counter()
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
        started=round(started, 3),
        host=socket.gethostname(),
        pid=os.getpid(),
        ran_in=ran_in,
    )
    _maybe_crash(unit.id)  # before the result is stored: the retried unit runs again
    storage.write_text(result_uri(out, unit), json.dumps(result, indent=2, default=str))
    return result


_run_unit = ray.remote(run_unit)


@ray.remote
class VictimUnitHost:
    """A victim host of the engine: runs, in one long-lived process, the units that attack or evaluate one
    trained victim, so the victim and what units derive from it (a pool's embeddings, a catalogue's features;
    :meth:`UnitContext.cached`) stay in memory from unit to unit instead of being loaded by each. Ray restarts
    a host whose process dies and retries its unit; the restarted host loads the victim from its checkpoint."""

    def run(self, scenario, out: str, unit: Unit, dep_names: list[str], threads: int, *dep_results) -> dict:
        return run_unit(scenario, out, unit, dep_names, threads, *dep_results, ran_in="victim host")


class HostPool:
    """The live victim hosts, at most ``capacity`` (what the cluster fits at ``resources`` each), each serving
    the victim of one key (the id of the unit that trained it); a victim with more ready units than hosts gets
    more hosts while the pool has room. A unit goes to an idle host of its victim, else to a new host (evicting
    the least recently used idle host of another victim when the pool is full), else it queues on its
    victim's least busy host; a victim without a host waits for one."""

    def __init__(self, resources: StageResources, capacity: int, options: dict):
        self.resources, self.capacity, self.options = resources, max(1, capacity), options
        self.hosts: dict[int, tuple[str, object]] = {}  # host number -> (key, actor), least recently used first
        self.busy: dict[int, int] = {}
        self._numbers = itertools.count()

    def submit(self, key: str, call_args: tuple) -> tuple[int | None, object]:
        """(host number, the unit's ref) from a host of ``key``, or (None, None) when none can be had now."""
        mine = [h for h, (k, _) in self.hosts.items() if k == key]
        idle = [h for h in mine if not self.busy[h]]
        if idle:
            host = idle[0]
        elif len(self.hosts) < self.capacity or self._evict_idle():
            host = self._start(key)
        elif mine:
            host = min(mine, key=self.busy.__getitem__)
        else:
            return None, None
        self.hosts[host] = self.hosts.pop(host)  # most recently used
        self.busy[host] += 1
        return host, self.hosts[host][1].run.remote(*call_args)

    def _start(self, key: str) -> int:
        host = next(self._numbers)
        actor = VictimUnitHost.options(
            num_cpus=self.resources.num_cpus,
            num_gpus=self.resources.num_gpus,
            max_restarts=3,
            max_task_retries=3,
            **self.options,
        ).remote()
        self.hosts[host], self.busy[host] = (key, actor), 0
        return host

    def _evict_idle(self) -> bool:
        idle = next((h for h in self.hosts if not self.busy[h]), None)
        if idle is not None:
            self.release(idle)
        return idle is not None

    def done(self, host: int) -> None:
        self.busy[host] -= 1

    def release(self, host: int) -> None:
        ray.kill(self.hosts.pop(host)[1])
        del self.busy[host]

    def release_idle(self) -> None:
        """Give back every idle host's resources (while tasks wait for them, an idle host would block them)."""
        for host in [h for h in self.hosts if not self.busy[h]]:
            self.release(host)

    def close(self) -> None:
        for host in list(self.hosts):
            self.release(host)


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
    victim_hosts: bool = True,
) -> tuple[dict[str, dict], dict[str, dict]]:
    """Run every unit whose result is missing; returns (results by unit id, counts per stage).
    ``on_result(unit, result)`` is called in the driver as each unit finishes (sweeps report through it).
    The units of a scenario's ``hosted`` stages run in victim hosts (:class:`VictimUnitHost`) unless
    ``victim_hosts`` is False; the results are the same either way."""
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
    dispatcher = _Dispatcher(scenario, out, resources, results, max_retries, victim_hosts)
    dispatcher.add([u for u in units if u.id not in results])
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
        while dispatcher.pending:
            done, _ = ray.wait(list(dispatcher.pending), num_returns=1)
            unit = dispatcher.pending.pop(done[0])
            try:
                results[unit.id] = ray.get(done[0])
            except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as exc:
                dispatcher.cancel()
                cause = getattr(exc, "cause", None) or exc
                raise StudyError(
                    f"{unit.stage} {unit.label or unit.id} failed: {cause!r}; finished units are kept, rerun to resume"
                ) from cause
            dispatcher.finished(unit, done[0])
            counts[unit.stage]["run"] += 1
            bars[unit.stage].update(1)
            for note in results[unit.id].get("notes", []):
                tqdm.write(note, file=sys.stderr)
            if on_result is not None:
                on_result(unit, results[unit.id])
    except KeyboardInterrupt:  # Ctrl-C stops the work too, not only the driver; finished units are kept
        dispatcher.cancel(force=True)
        raise
    finally:
        dispatcher.close()
        for bar in bars.values():
            bar.close()
    return {u.id: results[u.id] for u in units}, counts


class _Dispatcher:
    """Submits units as they become ready. A task unit is submitted once each dependency is finished or
    submitted as a task (Ray passes it the task's ref); a hosted unit once each dependency is finished, to the
    host of the victim it names (``scenario.hosted[stage]``: the dependency that trained it), so a host never
    waits on other work while holding its resources."""

    def __init__(self, scenario, out, resources, results, max_retries, victim_hosts):
        self.out, self.resources, self.results, self.max_retries = out, resources, results, max_retries
        self.hosted = dict(getattr(scenario, "hosted", {})) if victim_hosts else {}
        self.waiting: list[Unit] = []
        self.refs: dict[str, object] = {}  # unit id -> ref, for units submitted as tasks
        self.pending: dict = {}  # ref -> unit
        self.tasks = 0  # task units running or queued
        self.host_of: dict = {}  # ref -> host number, for hosted units
        env = {CRASH_ENV: os.environ[CRASH_ENV]} if os.environ.get(CRASH_ENV) else None
        self.options = {
            "scheduling_strategy": OUTSIDE_PLACEMENT_GROUPS,
            **({"runtime_env": {"env_vars": env}} if env else {}),
        }
        self.scenario, self._scenario_ref, self._pool = scenario, None, None

    @property
    def scenario_ref(self):
        if self._scenario_ref is None:
            self._scenario_ref = ray.put(self.scenario)
        return self._scenario_ref

    @property
    def pool(self) -> HostPool:
        if self._pool is None:
            host = _host_resources(self.resources, self.hosted)
            self._pool = HostPool(host, _capacity(host), self.options)
        return self._pool

    def add(self, units: list[Unit]) -> None:
        self.waiting.extend(units)
        self._dispatch()

    def finished(self, unit: Unit, ref) -> None:
        if unit.stage in self.hosted:
            self.pool.done(self.host_of.pop(ref))
        else:
            self.tasks -= 1
        self._dispatch()

    def _dispatch(self) -> None:
        still = []
        for u in self.waiting:
            ref = self._submit_hosted(u) if u.stage in self.hosted else self._submit_task(u)
            if ref is None:
                still.append(u)
            else:
                self.pending[ref] = u
        self.waiting = still
        if self._pool is not None and self.tasks:
            self._pool.release_idle()

    def _args(self, u: Unit) -> list:
        return [self.results[d] if d in self.results else self.refs[d] for d in u.deps.values()]

    def _submit_task(self, u: Unit):
        if not all(d in self.results or d in self.refs for d in u.deps.values()):
            return None
        res = self.resources.get(u.stage, StageResources())
        opts = {
            "num_cpus": res.num_cpus,
            "num_gpus": res.num_gpus,
            "max_retries": self.max_retries,
            "name": f"{u.stage}:{u.label}"[:100],
            **self.options,
        }
        ref = _run_unit.options(**opts).remote(
            self.scenario_ref, self.out, u, list(u.deps), max(1, int(res.num_cpus)), *self._args(u)
        )
        self.refs[u.id] = ref
        self.tasks += 1
        return ref

    def _submit_hosted(self, u: Unit):
        if not all(d in self.results for d in u.deps.values()):
            return None
        threads = max(1, int(self.pool.resources.num_cpus))
        host, ref = self.pool.submit(
            u.deps[self.hosted[u.stage]], (self.scenario_ref, self.out, u, list(u.deps), threads, *self._args(u))
        )
        if ref is not None:
            self.host_of[ref] = host
        return ref

    def cancel(self, force: bool = False) -> None:
        for ref in self.pending:
            ray.cancel(ref, force=force and ref not in self.host_of)  # an actor's task cannot be forced

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()


def _host_resources(resources: dict[str, StageResources], hosted: dict[str, str]) -> StageResources:
    """A victim host holds the most any of its stages asks for."""
    stages = [resources.get(s, StageResources()) for s in hosted]
    return StageResources(max(r.num_cpus for r in stages), max(r.num_gpus for r in stages))


def _capacity(host: StageResources) -> int:
    """How many victim hosts the cluster fits at once."""
    total = ray.cluster_resources()
    fits = [total.get("CPU", 1) // host.num_cpus] if host.num_cpus else []
    fits += [total.get("GPU", 0) // host.num_gpus] if host.num_gpus else []
    return int(min(fits)) if fits else 4
