"""FGSM / PGD on item images of visually-aware recommenders (docs/methods.md section 3): perturb a target
item's pixels within an L-inf ball to raise (promote) or lower (demote) its mean score over users,
optionally through a defense (adaptive attacker: BPDA for non-differentiable filters, EOT over a
randomised one) and past a detector (selective PGD: each step follows the detector's score for an image
it flags, the attack loss for one it passes; after Bryniarski et al., ICLR 2022)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from distrec.attacks.pgd import PGD
from distrec.config import AtLeastOne, Fraction, Positive
from distrec.models.visual import VisualVictim

METHODS = ("fgsm", "pgd")
GOALS = ("promote", "demote")


@dataclass
class ImageAttackConfig:
    """``eps`` in pixel units (8/255 = 0.0314); PGD ``alpha`` defaults to eps/4; FGSM is one step of eps.
    ``eot_samples``: gradient samples per step through a randomised defense (EOT)."""

    method: Literal[METHODS] = "pgd"
    eps: Fraction = 8 / 255
    alpha: Positive | None = None
    steps: AtLeastOne = 10
    random_start: bool = True
    goal: Literal[GOALS] = "promote"
    eot_samples: AtLeastOne = 1
    seed: int = 0


def straight_through(filter_: nn.Module) -> nn.Module:
    """BPDA (Athalye et al. 2018): the filter forward, the identity backward."""

    class StraightThrough(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = filter_

        def forward(self, x):
            return x + (self.inner(x) - x).detach()

    return StraightThrough()


class _FeaturesThrough(nn.Module):
    """pixels -> image features [B, E, F] of ``eot`` passes through ``defense`` (if any)."""

    def __init__(self, victim: VisualVictim, defense: nn.Module | None, eot: int):
        super().__init__()
        self.victim, self.defense, self.eot = victim, defense, eot

    def forward(self, x):
        views = [self.defense(x) if self.defense is not None else x for _ in range(self.eot)]
        return torch.stack([self.victim.image_features(v) for v in views], 1)


class _Evading(nn.Module):
    """pixels -> (features through the defense, the detector's score of the upload itself)."""

    def __init__(self, features: _FeaturesThrough, detector: nn.Module):
        super().__init__()
        self.features, self.detector = features, detector

    def forward(self, x):
        return self.features(x), self.detector.score(x)


class ItemImageAttack:
    """Crafts adversarial images for target items against ``victim``. ``defense``: a pixels -> pixels
    module the attacker differentiates through (wrap non-differentiable filters in
    :func:`straight_through`); ``detector``: a module with ``score(x)`` (higher = flagged) and a
    ``threshold`` that rejects uploads, which the attack evades (selective: an image flagged at the
    current step descends the detector's score, an unflagged one the attack loss)."""

    def __init__(
        self,
        victim: VisualVictim,
        config: ImageAttackConfig,
        defense: nn.Module | None = None,
        detector: nn.Module | None = None,
    ):
        self.victim, self.config, self.defense, self.detector = victim, config, defense, detector

    def objective(self, items: torch.Tensor, users: torch.Tensor):
        """Per image: -/+ mean over ``users`` of the item's score with the perturbed image's features."""
        with torch.no_grad():
            mean_user = self.victim.user_vectors(users).mean(0)
        sign = -1.0 if self.config.goal == "promote" else 1.0

        def loss(features: torch.Tensor) -> torch.Tensor:  # [T, E, F]
            t, e, f = features.shape
            vectors = self.victim.item_vectors(items.repeat_interleave(e), features.reshape(t * e, f))
            return sign * (vectors @ mean_user).view(t, e).mean(1)

        return loss

    def __call__(self, images: torch.Tensor, items: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        c = self.config
        alpha, steps = (c.eps, 1) if c.method == "fgsm" else (c.eps / 4 if c.alpha is None else c.alpha, c.steps)
        model, objective = _FeaturesThrough(self.victim, self.defense, c.eot_samples), self.objective(items, users)
        if self.detector is not None:
            model, objective = _Evading(model, self.detector), self.selective(objective)
        pgd = PGD(
            model,
            c.eps,
            alpha,
            steps,
            random_start=c.random_start and c.method == "pgd",
            generator=torch.Generator().manual_seed(c.seed),
        )
        return pgd(images, objective)

    def selective(self, objective):
        """Per image: the detector's score while it is above the threshold, else the attack loss."""
        threshold = self.detector.threshold

        def loss(output) -> torch.Tensor:
            features, score = output
            return torch.where(score.detach() > threshold, score, objective(features))

        return loss
