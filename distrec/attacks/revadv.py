"""RevAdv (Tang, Wen, Wang, RecSys 2020)."""

from __future__ import annotations

import torch

from distrec.attacks.gradient import GradientAttack
from distrec.attacks.objectives import ScoreBatch, target_cross_entropy
from distrec.attacks.registry import register_attack


@register_attack("revadv")
class RevAdv(GradientAttack):
    """RevAdv: fake data as a continuous matrix initialised from real profiles; at each outer step a
    fresh WRMF-objective surrogate is trained on real + fake data and the target cross-entropy of real
    users' scores is back-propagated to the fake data through the surrogate's training (unrolled steps
    or the closed-form ALS item step, the surrogate's ``gradient`` key); row-normalised SGD with
    momentum; projection onto each fake user's top ``n_filler`` items plus the targets.

    Example::

        attack = create_attack("revadv", outer_steps=30, lr=1.0)
        fake = attack.craft(ctx, surrogate)
    """

    description = "Gradient poisoning: fake profiles optimised through a retrained surrogate"
    paper = "Tang, Wen and Wang, RecSys 2020"

    def objective(self, batch: ScoreBatch) -> torch.Tensor:
        return target_cross_entropy(batch)
