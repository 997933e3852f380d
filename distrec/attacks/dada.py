"""DADA (Li, Di, Chen, NeurIPS 2022): difficulty- and diversity-aware gradient attack."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distrec.attacks.gradient import GradientAttack, GradientAttackConfig
from distrec.attacks.objectives import DifficultyDiversityLoss, ScoreBatch
from distrec.attacks.registry import register_attack


@dataclass
class DADAConfig(GradientAttackConfig):
    k: int = 10
    beta: float = 1.0
    gamma: float = 0.5


@register_attack("dada")
class DADA(GradientAttack):
    """RevAdv's outer loop with DADA's objective (:class:`DifficultyDiversityLoss`): the poison budget
    goes to users the targets can still reach, and to users no target reaches yet.

    Example::

        attack = create_attack("dada", outer_steps=30, lr=1.0)
        fake = attack.craft(ctx, surrogate)
    """

    description = "RevAdv's outer loop with a difficulty- and diversity-aware objective"
    paper = "Li, Di and Chen, NeurIPS 2022"

    Config = DADAConfig

    def objective(self, batch: ScoreBatch) -> torch.Tensor:
        cfg = self.config
        return DifficultyDiversityLoss(cfg.k, cfg.beta, cfg.gamma)(batch)
