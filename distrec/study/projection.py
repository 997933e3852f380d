"""A study's wall time on a cluster it has not run on, projected from the unit costs a finished run measured.

The projection replays the engine's scheduling: units in plan order, each started as soon as its
dependencies are done and a node has its stage's CPUs / GPUs free (the first node that fits, as Ray packs
tasks), running for the seconds it took (``unit_seconds`` of its stored result) plus a fixed per-unit
overhead. Victim hosts are not modelled: a hosted unit is projected as a task of its stage's resources.
"""

from __future__ import annotations

import heapq
import json
from dataclasses import dataclass

from distrec.distributed import storage
from distrec.study.engine import StageResources, Unit, _ordered, result_uri


@dataclass
class Projection:
    """``wall_s``: the projected makespan; ``busy_s``: the summed unit seconds; ``critical_path_s``: the
    longest chain of dependent units (no cluster finishes sooner); ``units``: how many were replayed."""

    wall_s: float
    busy_s: float
    critical_path_s: float
    units: int

    def utilisation(self, cpus: float) -> float:
        """The share of the cluster's CPU-seconds the units fill (for 1-CPU units)."""
        return self.busy_s / (self.wall_s * cpus) if self.wall_s else 0.0


def project(
    units: list[Unit],
    seconds: dict[str, float],
    resources: dict[str, StageResources],
    nodes: list[StageResources],
    overhead_s: float = 0.0,
) -> Projection:
    """The makespan of ``units`` (each taking ``seconds[unit.id]`` plus ``overhead_s``) on ``nodes`` (each
    node's CPUs and GPUs), scheduled as the engine and Ray would: in dependency-respecting plan order, every
    ready unit that fits started on the first node with room. A unit no node can hold is a ``ValueError``."""
    order = _ordered(units)
    cost = {u.id: seconds[u.id] + overhead_s for u in order}
    need = {u.id: resources.get(u.stage, StageResources()) for u in order}
    for u in order:
        if not any(n.num_cpus >= need[u.id].num_cpus and n.num_gpus >= need[u.id].num_gpus for n in nodes):
            raise ValueError(f"{u.stage} {u.label or u.id} needs {need[u.id]}, more than any node has")
    free = [[n.num_cpus, n.num_gpus] for n in nodes]
    finish: dict[str, float] = {}
    running: list[tuple[float, str, int]] = []  # (end, unit id, node)
    waiting = list(order)
    now = 0.0
    while waiting or running:
        still = []
        for u in waiting:
            if not all(d in finish and finish[d] <= now for d in u.deps.values()):
                still.append(u)
                continue
            r = need[u.id]
            node = next((i for i, f in enumerate(free) if f[0] >= r.num_cpus and f[1] >= r.num_gpus), None)
            if node is None:
                still.append(u)
                continue
            free[node][0] -= r.num_cpus
            free[node][1] -= r.num_gpus
            heapq.heappush(running, (now + cost[u.id], u.id, node))
        waiting = still
        if not running:
            break
        now, uid, node = heapq.heappop(running)
        finish[uid] = now
        free[node][0] += need[uid].num_cpus
        free[node][1] += need[uid].num_gpus
    chain: dict[str, float] = {}
    for u in order:
        chain[u.id] = cost[u.id] + max((chain[d] for d in u.deps.values()), default=0.0)
    return Projection(
        wall_s=now,
        busy_s=sum(cost.values()),
        critical_path_s=max(chain.values(), default=0.0),
        units=len(order),
    )


def measured_seconds(units: list[Unit], out: str) -> dict[str, float]:
    """Each unit's ``unit_seconds`` from its stored result in the study folder ``out`` (every unit must have
    run: a missing result is a ``FileNotFoundError`` naming it)."""
    seconds = {}
    for u in units:
        uri = result_uri(out, u)
        if not storage.exists(uri):
            raise FileNotFoundError(f"{uri}: {u.stage} {u.label or u.id} has no result; run the study first")
        seconds[u.id] = float(json.loads(storage.read_text(uri))["unit_seconds"])
    return seconds
