"""PGA (Li, Wang, Singh, Vorobeychik, NeurIPS 2016): projected gradient ascent on continuous fake ratings."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distrec.attacks.base import AttackContext
from distrec.attacks.gradient import GradientAttack, GradientAttackConfig
from distrec.attacks.objectives import ScoreBatch, target_score_loss
from distrec.attacks.profiles import project_profiles
from distrec.attacks.registry import register_attack
from distrec.config import Positive


@dataclass
class PGAConfig(GradientAttackConfig):
    """``rating_max``: the box [0, rating_max] the fake ratings are projected onto at every step (1 for implicit
    data)."""

    lr: Positive = 0.5
    momentum: float = 0.0
    rating_max: Positive = 1.0


@register_attack("pga")
class PGA(GradientAttack):
    """PGA, the classic gradient attack on matrix factorisation (Li et al. 2016): the fake users' ratings are a
    continuous matrix; each step trains the surrogate on real + fake ratings, takes the gradient of the
    integrity utility (:func:`~distrec.attacks.objectives.target_score_loss`, the targets' predicted scores over
    real users) with respect to the fake ratings through the surrogate's fit, and projects the ratings back onto
    the box [0, ``rating_max``]. Its filler rule comes once, at the end: each fake user keeps the targets and its
    ``n_filler - len(targets)`` highest-rated other items (RevAdv instead projects onto them at every step).
    The step is the row-normalised gradient, as distrec's other gradient attacks (Li et al. step on the raw
    gradient); the targets stay at ``rating_max``. Wrappable by SharpAP like RevAdv.

    Example::

        attack = create_attack("pga", outer_steps=30, lr=0.5)
        fake = attack.craft(ctx, surrogate)
    """

    description = "Gradient poisoning of matrix factorisation: projected gradient ascent on continuous fake ratings"
    paper = "Li, Wang, Singh and Vorobeychik, NeurIPS 2016"

    Config = PGAConfig

    def objective(self, batch: ScoreBatch) -> torch.Tensor:
        return target_score_loss(batch)

    def project(self, values: torch.Tensor, ctx: AttackContext) -> torch.Tensor:
        out = values.detach().clamp(0.0, self.config.rating_max)
        out[:, torch.as_tensor(ctx.targets)] = self.config.rating_max
        return out

    def finalize(self, fake: torch.Tensor, ctx: AttackContext) -> torch.Tensor:
        return project_profiles(fake, ctx.targets, ctx.budget.n_filler)
