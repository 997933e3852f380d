"""The threat model of an injective attack: how many fake users, how many interactions each, which targets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from distrec.attacks.protocols import PROTOCOLS, with_preset
from distrec.config import AtLeastOne, Fraction, HalfOpenShare, check
from distrec.data.matrix import UserItemCSR

BUCKETS = ("head", "torso", "tail", "any")
PROTOCOL_NAMES = tuple(PROTOCOLS)


@dataclass
class ThreatModel:
    """``fake_ratio``: fake users as a share of real users (``n_fake`` overrides it); ``n_filler``: the
    most interactions a fake user may have, targets included (default: the average real-user degree,
    rounded); targets: ``target_items`` (internal ids) or ``n_targets`` drawn with ``seed`` from a
    popularity ``target_bucket`` (docs/methods.md section 2: head > 95th percentile of item degree, torso
    75th-95th, tail < 50th, among items with at least one training interaction);
    ``target_original_ids`` names targets by the source's item ids instead. The attacker's copy of the
    data (:func:`attacker_view`): a share ``knowledge`` of the real interactions, of which a share
    ``knowledge_noise`` is moved to random items (RAPU's incomplete and perturbed data). ``preset``: the protocol
    whose defaults fill the keys a config leaves unset (:mod:`distrec.attacks.protocols`; apply it with
    :func:`threat_model`); the dataclass defaults are distrec's own preset."""

    preset: Literal[PROTOCOL_NAMES] | None = None
    fake_ratio: Fraction = 0.01
    n_fake: AtLeastOne | None = None
    n_filler: AtLeastOne | None = None
    n_targets: AtLeastOne = 5
    target_bucket: Literal[BUCKETS] = "torso"
    target_items: list[int] = field(default_factory=list)
    target_original_ids: list[str] = field(default_factory=list)
    knowledge: Fraction = 1.0
    knowledge_noise: HalfOpenShare = 0.0
    seed: int = 0


def threat_model(values: dict, source: str = "threat") -> ThreatModel:
    """The threat model of config ``values`` with its preset's defaults filled in."""
    return check(ThreatModel, with_preset(values, source), source)


@dataclass(frozen=True)
class Budget:
    n_fake: int
    n_filler: int


def resolve_budget(threat: ThreatModel, train: UserItemCSR) -> Budget:
    """The budget in absolute numbers for the real users of ``train``."""
    degrees = train.degrees()
    n_real = int((degrees > 0).sum())
    n_fake = threat.n_fake if threat.n_fake is not None else max(1, int(round(threat.fake_ratio * n_real)))
    n_filler = threat.n_filler if threat.n_filler is not None else max(1, int(round(degrees[degrees > 0].mean())))
    n_targets = len(threat.target_items) or threat.n_targets
    if n_fake < 1:
        raise ValueError(f"budget: n_fake must be at least 1, got {n_fake}")
    if n_filler < n_targets:
        raise ValueError(
            f"budget: n_filler ({n_filler}) must be at least the number of targets ({n_targets}): every fake profile "
            "holds all targets"
        )
    if n_filler > train.n_items:
        raise ValueError(f"budget: n_filler ({n_filler}) exceeds the number of items ({train.n_items})")
    return Budget(n_fake, n_filler)


def popularity_bucket(train: UserItemCSR, bucket: str) -> np.ndarray:
    """Item ids in a popularity bucket (item degree percentiles over items with a training interaction)."""
    if bucket not in BUCKETS:
        raise ValueError(f"target_bucket must be one of {BUCKETS}, got {bucket!r}")
    pop = np.bincount(train.indices, minlength=train.n_items)
    seen = np.flatnonzero(pop > 0)
    p50, p75, p95 = np.percentile(pop[seen], [50, 75, 95])
    chosen = {
        "head": pop[seen] > p95,
        "torso": (pop[seen] >= p75) & (pop[seen] <= p95),
        "tail": pop[seen] < p50,
        "any": np.ones(len(seen), bool),
    }[bucket]
    return seen[chosen]


def select_targets(threat: ThreatModel, train: UserItemCSR) -> np.ndarray:
    """The given ``target_items``, or ``n_targets`` distinct items drawn from the bucket with ``seed``."""
    if threat.target_items:
        targets = np.asarray(threat.target_items, np.int64)
        bad = targets[(targets < 0) | (targets >= train.n_items)]
        if len(bad):
            raise ValueError(f"target_items: {bad.tolist()} are not item ids (0..{train.n_items - 1})")
        if len(set(targets.tolist())) != len(targets):
            raise ValueError(f"target_items: {targets.tolist()} has repeated ids")
        return targets
    pool = popularity_bucket(train, threat.target_bucket)
    if len(pool) < threat.n_targets:
        raise ValueError(
            f"target_bucket {threat.target_bucket!r} has {len(pool)} items, fewer than n_targets={threat.n_targets}"
        )
    rng = np.random.default_rng(threat.seed)
    return np.sort(rng.choice(pool, threat.n_targets, replace=False))


def attacker_view(train: UserItemCSR, threat: ThreatModel) -> UserItemCSR:
    """The attacker's copy of ``train``: each interaction kept with probability ``knowledge``, then a
    share ``knowledge_noise`` of the kept ones moved to an item drawn uniformly (seeded by ``seed``).
    With ``knowledge = 1`` and no noise, ``train`` itself."""
    if threat.knowledge == 1 and threat.knowledge_noise == 0:
        return train
    rng = np.random.default_rng([threat.seed, 7])
    users, items = train.rows(np.arange(train.n_users))
    keep = rng.random(len(users)) < threat.knowledge
    users, items = users[keep], items[keep].copy()
    moved = rng.random(len(items)) < threat.knowledge_noise
    items[moved] = rng.integers(0, train.n_items, int(moved.sum()))
    pairs = np.unique(users.astype(np.int64) * train.n_items + items)  # a moved interaction may land on a held one
    return UserItemCSR.from_arrays(pairs // train.n_items, pairs % train.n_items, train.n_users, train.n_items)
