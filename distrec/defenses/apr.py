"""APR: adversarial personalised ranking (He et al., SIGIR 2018), a training-time defense of
embedding-based recommenders against perturbations of their parameters."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from distrec.config import NonNegative, NonNegativeInt, Positive
from distrec.defenses.registry import TrainingDefense, register_defense
from distrec.models.trainer import PairwiseVictim, TrainingObjective


@dataclass
class APRConfig:
    """``eps``: the perturbation norm per embedding row (paper: 0.5); ``adv_reg``: lambda, the weight
    of the adversarial term (paper: 1); ``warmup_epochs``: plain epochs before APR starts (the paper
    starts from a trained MF-BPR)."""

    eps: Positive = 0.5
    adv_reg: NonNegative = 1.0
    warmup_epochs: NonNegativeInt = 0


class APRObjective(TrainingObjective):
    """L_APR = L(Theta) + lambda L(Theta + Delta_adv) (eq. 7), with Delta_adv = eps Gamma / |Gamma|
    (eq. 6) and Gamma the gradient of L with respect to the embedding tables at Delta = 0, normalised
    per row (the reference code's l2_normalize over the embedding dimension)."""

    def __init__(self, config: APRConfig):
        self.config = config

    def perturbation(
        self, model: PairwiseVictim, params: list[torch.nn.Parameter], users, pos, neg
    ) -> list[torch.Tensor]:
        """Delta_adv of every table, from the gradients of the clean loss (already in ``p.grad``)."""
        return [
            self.config.eps * F.normalize(p.grad, dim=-1) if p.grad is not None else torch.zeros_like(p) for p in params
        ]

    def backward(self, model: PairwiseVictim, users, pos, neg, epoch: int) -> torch.Tensor:
        loss = super().backward(model, users, pos, neg, epoch)
        if epoch < self.config.warmup_epochs:
            return loss
        params = model.embedding_parameters()
        deltas = self.perturbation(model, params, users, pos, neg)
        with torch.no_grad():
            for p, d in zip(params, deltas):
                p.add_(d)
        try:
            adversarial = model.loss(users, pos, neg)
            (self.config.adv_reg * adversarial).backward()
        finally:
            with torch.no_grad():
                for p, d in zip(params, deltas):
                    p.sub_(d)
        return loss + self.config.adv_reg * adversarial.detach()


@register_defense("apr")
class APR(TrainingDefense):
    """Trains the victim with :class:`APRObjective` (a per-instance ``objective``).

    Example::

        defense = create_defense("apr", eps=0.5, adv_reg=1.0)
        defense.apply(victim).fit(data)
    """

    description = "Adversarial personalised ranking: training against worst-case embedding perturbations"
    paper = "He et al., SIGIR 2018"

    Config = APRConfig

    @classmethod
    def supports(cls, victim_cls: type) -> bool:
        return (
            issubclass(victim_cls, PairwiseVictim)
            and victim_cls.embedding_parameters is not PairwiseVictim.embedding_parameters
        )

    def apply(self, victim):
        victim.objective = APRObjective(self.config)
        return victim
