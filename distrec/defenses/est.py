"""Embedding-shifting adversarial training (EST, Zhou et al., ECCV 2020): the ranking model is trained on
x~ = argmax_{||x~ - x||_inf <= eps} d(f(x~), f(x)) instead of x, i.e. min_theta L_triplet(f(x~)), which
bounds how far any attack of that budget can move an embedding and so mitigates CA and QA alike."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from distrec.attacks.pgd import RankPGD
from distrec.attacks.ranking.objectives import EmbeddingShiftObjective
from distrec.config import AtLeastOne, Positive
from distrec.defenses.registry import TrainingDefense, register_defense


@dataclass
class EmbeddingShiftingTraining:
    """The inner PGD: ``eps`` (0.3 on MNIST in the paper), ``steps``/``alpha`` (default AdvRank's schedule:
    30 steps of 0.01 at eps 0.3), ``random_start``."""

    eps: Positive = 0.3
    steps: AtLeastOne | None = None
    alpha: Positive | None = None
    random_start: bool = False

    def perturb(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The embedding-shifting adversarial examples of a training batch."""
        with torch.no_grad():
            reference = model(images)
        attack = RankPGD(model, self.eps, self.alpha, self.steps, random_start=self.random_start)
        return attack(images, EmbeddingShiftObjective(reference, model.metric))


@register_defense("est")
class EST(TrainingDefense):
    """Embedding-shifting adversarial training of a metric-learning embedder (AdvRank section 4):
    ``apply(embedder)`` gives the training batches' perturbation for :func:`fit_embedder`.

    Example::

        defense = create_defense("est", eps=0.3)
        fit_embedder(embedder, images, config, perturb=defense.apply(embedder))
    """

    description = "Embedding-shifting adversarial training of a metric-learning embedder"
    paper = "Zhou et al., ECCV 2020"

    Config = EmbeddingShiftingTraining

    @classmethod
    def supports(cls, victim_cls: type) -> bool:
        from distrec.models.embedding import Embedder

        return issubclass(victim_cls, Embedder)

    @classmethod
    def supported_victims(cls) -> list[str]:
        return ["embedders (c2f2, timm)"]

    def apply(self, victim):
        return self.config.perturb
