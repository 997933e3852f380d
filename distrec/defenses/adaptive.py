"""The adaptive attacker of a detector (docs/methods.md section 2b; Carlini et al. 2019, Bryniarski et al. 2022):
camouflaged fake profiles (:mod:`distrec.attacks.camouflage`), of which the attacker keeps those that the
detector itself, run by the attacker on its own view of the data, scores least suspicious; or, for a
detector whose score is differentiable in the profiles, that score as a penalty of the gradient attack
(:class:`DetectorPenalty`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from distrec.attacks.budget import Budget
from distrec.attacks.camouflage import CamouflageConfig, camouflage
from distrec.config import NonNegative
from distrec.data.dataset import InMemoryDataset
from distrec.data.matrix import UserItemCSR
from distrec.data.schema import interactions_table
from distrec.defenses.planted import stacked
from distrec.defenses.registry import create_defense
from distrec.models.registry import create_victim


def _fit_wrmf(train: UserItemCSR):
    """The attacker's stand-in for a detector that reads a model (spectral signatures): WRMF on ``train``."""
    users = np.repeat(np.arange(train.n_users), train.degrees())
    data = InMemoryDataset(
        {"train": interactions_table(users, train.indices)},
        {"name": "attacker view", "n_users": train.n_users, "n_items": train.n_items},
    )
    model = create_victim("wrmf", train.n_users, train.n_items, factors=32, iterations=8)
    model.fit(data, progress=False)
    return model


def evade(
    fake: torch.Tensor, view: UserItemCSR, targets: np.ndarray, budget: Budget, config: CamouflageConfig, seed: int
) -> torch.Tensor:
    """``config.candidates`` camouflaged versions of every fake profile, scored together by the detector
    (learnt on ``view``) beside the real users; the ``n_fake`` lowest-scored profiles are kept."""
    if config.detector is None:
        return camouflage(fake, view, targets, budget, config, seed)
    pool = torch.cat(
        [camouflage(fake, view, targets, budget, config, seed + 7919 * k) for k in range(config.candidates)]
    )
    detector = create_defense(config.detector, **config.detector_config)
    detector.learn(view, seed + 1)
    rows, items = torch.nonzero(pool, as_tuple=True)
    candidates = UserItemCSR.from_arrays(rows.numpy(), items.numpy(), pool.shape[0], view.n_items)
    scores = detector.scores(stacked(view, candidates), _fit_wrmf, seed + 1)[view.n_users :]
    return pool[torch.as_tensor(np.argsort(scores, kind="stable")[: fake.shape[0]])]


@dataclass
class PenaltyConfig:
    """``detector`` (a data defense whose score is differentiable in the profiles, with ``detector_config``):
    its suspicion of the fakes is a penalty of the gradient attack; ``weight``: the penalty's share of each
    outer step beside the row-normalised poison gradient."""

    detector: str
    weight: NonNegative = 1.0
    detector_config: dict = field(default_factory=dict)


class DetectorPenalty:
    """The adaptive attacker of a detector with a differentiable score (docs/methods.md section 2b): at each
    outer step the detector is fit to the attacker's view with the current fakes appended, and the gradient of
    the fakes' summed suspicion with respect to their profiles is returned for the attack to descend
    (:attr:`distrec.attacks.gradient.GradientAttack.penalty`). The record gives the fakes' mean suspicion
    percentile among all users (100: the most suspicious)."""

    def __init__(self, config: PenaltyConfig, view: UserItemCSR, seed: int):
        self.detector = create_defense(config.detector, **config.detector_config)
        self.detector.learn(view, seed + 1)
        self.view, self.seed, self.name = view, seed + 1, config.detector

    def __call__(self, fake: torch.Tensor) -> tuple[torch.Tensor, dict]:
        rows, items = torch.nonzero(fake > 0.5, as_tuple=True)
        fakes = UserItemCSR.from_arrays(rows.numpy(), items.numpy(), fake.shape[0], self.view.n_items)
        poisoned = stacked(self.view, fakes)
        scores, grad = self.detector.scores_with_gradient(poisoned, fake.shape[0], self.seed)
        percentile = 100.0 * (np.argsort(np.argsort(scores)) + 0.5) / len(scores)
        record = {f"{self.name}_suspicion_percentile": float(percentile[self.view.n_users :].mean())}
        return torch.as_tensor(grad, dtype=fake.dtype), record
