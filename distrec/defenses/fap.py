"""FAP, fraudulent action propagation (Zhang et al., "Catch the black sheep", IJCAI 2015): spam
probability propagated over the user-item bipartite graph from seed spammers. Labelled spammers are what a
defender lacks; the seeds here are fake profiles the defender plants itself (random, bandwagon, popular),
joined to the data being screened and clamped at probability 1."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

import numpy as np
import pydantic

from distrec.config import AtLeastOne, Fraction, Shares
from distrec.defenses.pca_users import sparse
from distrec.defenses.planted import PLANTABLE, planted_profiles, stacked
from distrec.defenses.registry import register_defense
from distrec.defenses.screening import DataDefense, ScreeningConfig


@dataclass
class FAPConfig(ScreeningConfig):
    """``planted``/``sizes``/``n_targets``: the seed profiles (as for the profile classifier);
    ``iterations``: propagation rounds; ``damping``: the share of a user's probability taken from its
    items each round (the rest stays at the prior 0)."""

    planted: Annotated[list[Literal[PLANTABLE]], pydantic.Field(min_length=1)] = field(
        default_factory=lambda: list(PLANTABLE)
    )
    sizes: Shares = field(default_factory=lambda: [0.02])
    n_targets: AtLeastOne = 5
    iterations: AtLeastOne = 10
    damping: Fraction = 0.85


def propagate(x, seeds: np.ndarray, iterations: int, damping: float) -> np.ndarray:
    """p_i = mean of p_u over item i's users; p_u = damping * mean of p_i over u's items; seeds fixed at 1."""
    deg_u = np.maximum(np.asarray(x.sum(1)).ravel(), 1)
    deg_i = np.maximum(np.asarray(x.sum(0)).ravel(), 1)
    p = seeds.astype(np.float64)
    for _ in range(iterations):
        items = (x.T @ p) / deg_i
        p = np.where(seeds, 1.0, damping * (x @ items) / deg_u)
    return p


@register_defense("fap")
class FAP(DataDefense):
    """A user's suspicion is its propagated spam probability.

    Example::

        detector = create_defense("fap", fpr=0.05, n_targets=5)
        screening = detector.screen(poisoned, reference=clean, fit=None, seed=0)
    """

    description = "Detector: spam probability propagated over the user-item graph from planted fakes"
    paper = "Zhang et al., IJCAI 2015"

    Config = FAPConfig

    def scores(self, train, fit, seed):
        c = self.config
        planted = planted_profiles(train, c.planted, c.sizes, c.n_targets, seed)
        seeds = np.r_[np.zeros(train.n_users, bool), np.ones(planted.n_users, bool)]
        return propagate(sparse(stacked(train, planted)), seeds, c.iterations, c.damping)[: train.n_users]
