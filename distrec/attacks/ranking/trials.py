"""Which queries, candidates and semantics-preserving sets an adversarial ranking trial uses, following
AdvRank's protocol, and the objective each attack builds from them.

Attacks: ``CA+``, ``CA-`` (perturb a candidate against ``k`` = w queries), ``QA+``, ``QA-`` (perturb a
query against ``k`` = m candidates) and their semantics-preserving forms ``SP-QA+``, ``SP-QA-``.
Selection (pool = the candidate set, attacked images are pool members): CA+ queries and QA+ candidates
are uniform over the pool; CA- queries are drawn from the candidate's top 1% neighbours (with
replacement); QA- candidates are m distinct members of the query's top 1%; SP-QA preserves the query's
top-G (QA+) or the best G of its remaining top 1% (QA-).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from distrec.attacks.ranking.objectives import CandidateObjective, QueryObjective, RankingObjective
from distrec.models.triplet import cross_distance

ATTACKS = ("CA+", "CA-", "QA+", "QA-", "SP-QA+", "SP-QA-")
DEFAULT_XI = {"+": 1.0, "-": 100.0}


@dataclass(frozen=True)
class RankAttackSpec:
    """``kind`` CA or QA, ``direction`` + or -, ``sp``: semantics preserving (QA only)."""

    kind: str
    direction: str
    sp: bool

    @property
    def name(self) -> str:
        return f"{'SP-' if self.sp else ''}{self.kind}{self.direction}"


def parse_attack(name: str) -> RankAttackSpec:
    m = re.fullmatch(r"(SP-?)?(CA|QA)([+-])", name.strip().upper())
    if m is None or (m.group(1) and m.group(2) == "CA"):
        raise ValueError(f"unknown ranking attack {name!r}; expected one of {ATTACKS}")
    return RankAttackSpec(m.group(2), m.group(3), bool(m.group(1)))


@dataclass
class Trials:
    """A batch of trials: ``rows`` [B] are the attacked images (pool rows), ``others`` [B, k] the queries
    (CA) or candidates (QA), ``preserve`` [B, G] the SP set or ``None``."""

    rows: torch.Tensor
    others: torch.Tensor
    preserve: torch.Tensor | None = None


def _neighbours(pool: torch.Tensor, rows: torch.Tensor, metric: str, count: int) -> torch.Tensor:
    """The ``count`` nearest pool rows of each attacked row, itself excluded (AdvRank drops the first)."""
    d = cross_distance(pool[rows], pool, metric)
    d[torch.arange(len(rows)), rows] = -float("inf")
    return d.topk(count + 1, largest=False).indices[:, 1:]


def select_trials(
    spec: RankAttackSpec,
    pool: torch.Tensor,
    rows: torch.Tensor,
    k: int,
    metric: str,
    generator: torch.Generator,
    top_fraction: float = 0.01,
    preserve_size: int = 5,
) -> Trials:
    n = pool.shape[0]
    top = max(1, int(n * top_fraction))
    b = len(rows)
    if spec.direction == "+":
        others = torch.randint(n, (b, k), generator=generator)
        preserve = _neighbours(pool, rows, metric, preserve_size) if spec.sp else None
        return Trials(rows, others, preserve)
    if spec.kind == "QA" and k + (preserve_size if spec.sp else 0) > top:
        raise ValueError(
            f"{spec.name}: m={k} (+{preserve_size} preserved) exceeds the top {top_fraction:.0%} of a pool of {n}"
        )
    near = _neighbours(pool, rows, metric, top)
    if spec.kind == "CA":
        return Trials(rows, near.gather(1, torch.randint(top, (b, k), generator=generator)))
    order = torch.stack([torch.randperm(top, generator=generator) for _ in range(b)])
    preserve = near.gather(1, order[:, k:].sort(dim=1).values[:, :preserve_size]) if spec.sp else None
    return Trials(rows, near.gather(1, order[:, :k]), preserve)


def build_objective(
    spec: RankAttackSpec, pool: torch.Tensor, trials: Trials, metric: str, xi: float | None = None
) -> RankingObjective:
    """The objective of ``spec`` for these trials over the pool embeddings ``pool`` [N, D]."""
    if spec.kind == "CA":
        return CandidateObjective(pool[trials.others], pool, metric, spec.direction)
    preserve = pool[trials.preserve] if trials.preserve is not None else None
    return QueryObjective(
        pool[trials.others], pool, metric, spec.direction, preserve, DEFAULT_XI[spec.direction] if xi is None else xi
    )
