"""SAM, sharpness-aware minimisation (Foret et al., ICLR 2021) of a victim's weights: min_w max_{||e|| <= rho}
L(w + e), with the inner maximum taken by one ascent step e^(w) = rho g / ||g|| (eq. 2) and the descent step
along the gradient at w + e^(w) (eq. 3). SharpAP searches for the worst victim in such a ball; a SAM-trained
victim asks whether a flat minimum resists sharpness-aware poison."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distrec.config import NonNegativeInt, Positive
from distrec.defenses.registry import TrainingDefense, register_defense
from distrec.models.trainer import PairwiseVictim, TrainingObjective


@dataclass
class SAMConfig:
    """``rho``: the radius of the weight ball (paper: 0.05 for most image tasks); ``warmup_epochs``:
    plain epochs first."""

    rho: Positive = 0.05
    warmup_epochs: NonNegativeInt = 0


def ascent(params: list[torch.nn.Parameter], rho: float) -> list[torch.Tensor]:
    """e^(w) = rho g / ||g||_2 over all weights together (eq. 2 with p = 2), from the gradients in ``p.grad``."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    norm = torch.sqrt(sum((g.float() ** 2).sum() for g in grads)).clamp_min(1e-12)
    return [rho * g / norm for g in grads]


def sharpness_aware_loss(model: PairwiseVictim, users, pos, neg, rho: float) -> torch.Tensor:
    """L^SAM(w) ~ L(w + e^(w)) of a batch (the quantity SAM minimises), leaving the weights and their
    gradients as they were."""
    params = [p for p in model.parameters() if p.requires_grad]
    saved = [p.grad for p in params]
    for p in params:
        p.grad = None
    model.loss(users, pos, neg).backward()
    steps = ascent(params, rho)
    with torch.no_grad():
        for p, e in zip(params, steps):
            p.add_(e)
        try:
            return model.loss(users, pos, neg).detach()
        finally:
            for p, e, g in zip(params, steps, saved):
                p.sub_(e)
                p.grad = g


class SAMObjective(TrainingObjective):
    def __init__(self, config: SAMConfig):
        self.config = config

    def backward(self, model: PairwiseVictim, users, pos, neg, epoch: int) -> torch.Tensor:
        loss = super().backward(model, users, pos, neg, epoch)
        if epoch < self.config.warmup_epochs:
            return loss
        params = [p for p in model.parameters() if p.requires_grad]
        steps = ascent(params, self.config.rho)
        with torch.no_grad():
            for p, e in zip(params, steps):
                p.add_(e)
                p.grad = None
        try:
            perturbed = model.loss(users, pos, neg)
            perturbed.backward()  # the update uses the gradient at w + e only
        finally:
            with torch.no_grad():
                for p, e in zip(params, steps):
                    p.sub_(e)
        return perturbed.detach()


@register_defense("sam")
class SAM(TrainingDefense):
    """Trains a pairwise victim with :class:`SAMObjective`.

    Example::

        defense = create_defense("sam", rho=0.05, warmup_epochs=0)
        defense.apply(victim).fit(data)
    """

    description = "Sharpness-aware minimisation of the victim's loss"
    paper = "Foret et al., ICLR 2021"

    Config = SAMConfig

    @classmethod
    def supports(cls, victim_cls: type) -> bool:
        return issubclass(victim_cls, PairwiseVictim)

    def apply(self, victim):
        victim.objective = SAMObjective(self.config)
        return victim
