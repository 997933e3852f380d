"""Adversarial weight perturbation training: AWP (Wu et al., NeurIPS 2020) on every weight matrix and
RAWP (RAWP-FT stage 1, methods.md section 5) on a random half of them, re-drawn every epoch.

Per batch: a proxy takes one Adam step (``proxy_lr``) that *increases* the loss from the current weights
(the proxy's optimiser state persists across batches, as a proxy optimiser created once would; only the
matrices being perturbed need the proxy, so only their gradients and moments are computed);
for each weight matrix the perturbation is d = ||w|| / ||w_proxy - w|| (w_proxy - w) (AWP eq. 9,
layer-wise), added with size gamma to the chosen matrices; the loss and its gradients are taken at the
perturbed weights, which are then restored, and the victim's optimiser steps with those gradients.
RAWP: each matrix is on with probability ``layer_prob`` for the whole epoch, gamma_epoch = gamma * U(0.8, 1.2)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from distrec.attacks.weights import perturbed
from distrec.defenses.registry import Defense, register_defense
from distrec.models.trainer import PairwiseVictim, TrainingObjective


@dataclass
class AWPConfig:
    """``gamma``: the perturbation size relative to each matrix's norm (AWP 0.01; RAWP 1e-3, swept
    2e-3..5e-3); ``proxy_lr``: the proxy's Adam step (0.01); ``warmup_epochs``: plain epochs first."""

    gamma: float = 0.01
    proxy_lr: float = 0.01
    warmup_epochs: int = 0

    def __post_init__(self):
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")
        if self.proxy_lr <= 0:
            raise ValueError(f"proxy_lr must be positive, got {self.proxy_lr}")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be non-negative, got {self.warmup_epochs}")


@dataclass
class RAWPConfig(AWPConfig):
    """RAWP: ``gamma`` 1e-3, each matrix perturbed with probability ``layer_prob`` per epoch (0.5)."""

    gamma: float = 1e-3
    layer_prob: float = 0.5
    seed: int = 0

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.layer_prob <= 1:
            raise ValueError(f"layer_prob must be in (0, 1], got {self.layer_prob}")


class AWPObjective(TrainingObjective):
    def __init__(self, config: AWPConfig):
        self.config = config
        self.moments: dict | None = None
        self.epoch, self.mask, self.gamma = -1, None, config.gamma

    def start(self, epoch: int, n: int) -> None:
        """Which matrices this epoch perturbs, and gamma_epoch (every matrix, gamma for AWP)."""
        self.epoch, self.mask, self.gamma = epoch, [True] * n, self.config.gamma

    def proxy_direction(self, grads: list[torch.Tensor], layers: list[int]) -> list[torch.Tensor]:
        """w_proxy - w of matrices ``layers`` for one Adam step of ``proxy_lr`` ascending the loss
        (bias-corrected moments; a matrix's moments advance on the batches that perturb it)."""
        b1, b2, eps = 0.9, 0.999, 1e-8
        if self.moments is None:
            self.moments, self.steps = {}, {}
        out = []
        for i, g in zip(layers, grads):
            m, v = self.moments.setdefault(i, (torch.zeros_like(g), torch.zeros_like(g)))
            t = self.steps[i] = self.steps.get(i, 0) + 1
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            out.append(self.config.proxy_lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps))
        return out

    def backward(self, model: PairwiseVictim, users, pos, neg, epoch: int) -> torch.Tensor:
        if epoch < self.config.warmup_epochs:
            return super().backward(model, users, pos, neg, epoch)
        matrices = model.weight_matrices()
        if epoch != self.epoch:
            self.start(epoch, len(matrices))
        layers = [i for i, on in enumerate(self.mask) if on]
        chosen = [matrices[i] for i in layers]
        if not chosen:  # RAWP drew no matrix this epoch
            return super().backward(model, users, pos, neg, epoch)
        weights = [w for _, w, _ in chosen]
        grads = torch.autograd.grad(model.loss(users, pos, neg), weights)  # only the perturbed matrices
        with torch.no_grad():
            deltas = [self.gamma * w.norm() / step.norm().clamp_min(1e-12) * step for w, step in zip(weights, self.proxy_direction(list(grads), layers))]
        with perturbed(chosen, deltas):
            loss = model.loss(users, pos, neg)
            loss.backward()
        return loss.detach()


class RAWPObjective(AWPObjective):
    def start(self, epoch: int, n: int) -> None:
        rng = np.random.default_rng([self.config.seed, epoch])
        self.epoch, self.mask = epoch, (rng.random(n) < self.config.layer_prob).tolist()
        self.gamma = self.config.gamma * float(rng.uniform(0.8, 1.2))


class _WeightPerturbationDefense(Defense):
    kind = "training"
    objective: type

    @classmethod
    def supports(cls, victim_cls: type) -> bool:
        return issubclass(victim_cls, PairwiseVictim) and hasattr(victim_cls, "weight_matrices")

    def apply(self, victim):
        victim.objective = self.objective(self.config)
        return victim


@register_defense("awp")
class AWP(_WeightPerturbationDefense):
    """AWP on every weight matrix (gamma 0.01)."""

    Config = AWPConfig
    objective = AWPObjective


@register_defense("rawp")
class RAWP(_WeightPerturbationDefense):
    """RAWP-FT stage 1: AWP on a random half of the weight matrices, re-drawn per epoch (gamma 1e-3)."""

    Config = RAWPConfig
    objective = RAWPObjective
