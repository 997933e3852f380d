"""Camouflage: an attack's fake profiles reshaped to look like real users to a detector that reads profile
shape (degree, item popularity: PCA-SelectUsers, profile classifiers, FAP), at the same budget. The adaptive
attacker of docs/methods.md section 2b (Carlini et al. 2019: a defense is reported against an attacker who
knows it): each fake copies a real user's degree and the popularity of that user's items, and fills each
slot with an item of the same popularity bucket drawn in proportion to how many of the original fakes hold
it (plus one: every item of the bucket stays possible, and fakes do not all copy each other)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from distrec.attacks.budget import Budget
from distrec.config import AtLeastOne
from distrec.data.matrix import UserItemCSR


@dataclass
class CamouflageConfig:
    """``buckets``: popularity buckets (quantiles of log popularity) an item is matched within;
    ``detector`` (a data defense's name, with ``detector_config``): the attacker runs that detector itself
    on ``candidates`` camouflaged profiles per fake user and keeps the ones it scores least suspicious."""

    buckets: AtLeastOne = 10
    detector: str | None = None
    detector_config: dict = field(default_factory=dict)
    candidates: AtLeastOne = 8


def camouflage(
    fake: torch.Tensor, train: UserItemCSR, targets: np.ndarray, budget: Budget, config: CamouflageConfig, seed: int
) -> torch.Tensor:
    """Fake profiles with every target plus, for a real template user drawn per fake among those whose
    degree fits the budget, one filler per template item (up to the budget) from that item's popularity
    bucket, drawn with weight 1 + the number of original fakes holding it."""
    rng = np.random.default_rng(seed)
    n_items, t = train.n_items, len(targets)
    popularity = np.bincount(train.indices, minlength=n_items).astype(np.float64)
    edges = np.quantile(np.log1p(popularity), np.linspace(0, 1, config.buckets + 1)[1:-1])
    bucket = np.searchsorted(edges, np.log1p(popularity), side="right")
    weight = fake.sum(0).numpy().astype(np.float64) + 1.0
    weight[targets] = 0.0
    degrees = train.degrees()
    templates = np.flatnonzero((degrees > t) & (degrees <= budget.n_filler))
    if len(templates) == 0:
        templates = np.flatnonzero(degrees > 0)
    out = torch.zeros_like(fake)
    out[:, torch.as_tensor(targets)] = 1.0
    for row in range(fake.shape[0]):
        r = rng.choice(templates)
        items = train.indices[train.indptr[r] : train.indptr[r + 1]]
        items = rng.permutation(items[~np.isin(items, targets)])[: budget.n_filler - t]
        taken = set()
        for b in bucket[items]:
            pool = np.flatnonzero(bucket == b)
            pool = pool[(weight[pool] > 0) & ~np.isin(pool, list(taken))]
            if len(pool) == 0:
                continue
            pick = int(rng.choice(pool, p=weight[pool] / weight[pool].sum()))
            taken.add(pick)
            out[row, pick] = 1.0
    return out
