"""Adversarial weight perturbation as a robustness measurement (RAWP-FT, docs/methods.md section 5): the
attacker moves every weight matrix of a trained model within a ball relative to each row's norm, to
make the model disagree with its own predictions.

For a batch of test users and their candidates, pseudo-labels are the model's predictions
(sigmoid(score) > 0.5) and g the gradient of their BCE. FGSM: every row moves by
dw_row = eps ||w_row|| g_row / ||g_row||; BIM/PGD: ``steps`` such steps of ``alpha`` (default eps / steps),
each projected back to ||dw_row|| <= eps ||w_row||. Rows are output units (``nn.Linear`` rows); a model
lists its matrices and each one's input axis with ``weight_matrices()``. With ``target: embeddings`` the same
attack moves the rows of the embedding tables instead (``embedding_parameters()``, a row per user or item),
the embedding-perturbation attack of APR (He et al. 2018, eq. 6) with eps relative to each row's norm."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from distrec.config import AtLeastOne, Fraction, Positive

METHODS = ("fgsm", "pgd")
TARGETS = ("weights", "embeddings")


@dataclass
class WeightAttackConfig:
    """``eps``: the radius relative to each row's norm (RAWP-FT: 1e-4 .. 0.1); ``batch_users``: test users
    attacked together (1: a perturbation per user, as the reference evaluation)."""

    eps: Fraction = 0.008
    method: Literal[METHODS] = "fgsm"
    steps: AtLeastOne = 10
    alpha: Positive | None = None
    batch_users: AtLeastOne = 1
    target: Literal[TARGETS] = "weights"


def row_normalized(g: torch.Tensor, axis: int) -> torch.Tensor:
    """g scaled so that every row (the slices along ``axis``) has unit norm."""
    return g / g.norm(dim=axis, keepdim=True).clamp_min(1e-12)


def project(delta: torch.Tensor, w: torch.Tensor, eps: float, axis: int) -> torch.Tensor:
    """delta with each row's norm clipped to eps times the same row of w."""
    limit = eps * w.norm(dim=axis, keepdim=True)
    return delta * (limit / delta.norm(dim=axis, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)


@contextlib.contextmanager
def perturbed(matrices, deltas):
    """The model with ``deltas`` added to its weight matrices inside the block, restored after."""
    with torch.no_grad():
        for (_, w, _), d in zip(matrices, deltas):
            w.add_(d)
    try:
        yield
    finally:
        with torch.no_grad():
            for (_, w, _), d in zip(matrices, deltas):
                w.sub_(d)


def attacked_matrices(model, target: str) -> list[tuple[str, torch.nn.Parameter, int]]:
    """(name, matrix, row axis) of what the attack moves: the weight matrices or the embedding tables."""
    if target == "weights":
        return model.weight_matrices()
    return [(f"embedding.{k}", p, 1) for k, p in enumerate(model.embedding_parameters())]


class WeightAttack:
    def __init__(self, model, config: WeightAttackConfig):
        self.model, self.config = model, config
        self.matrices = attacked_matrices(model, config.target)

    def _gradients(self, users: torch.Tensor, items: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
        weights = [w for _, w, _ in self.matrices]
        frozen = [w for w in weights if not w.requires_grad]  # e.g. while a defense fine-tunes one layer
        for w in frozen:
            w.requires_grad_(True)
        try:
            with torch.enable_grad():
                loss = F.binary_cross_entropy_with_logits(self.model.score_pairs(users, items), labels)
                return torch.autograd.grad(loss, weights)
        finally:
            for w in frozen:
                w.requires_grad_(False)

    def __call__(self, users: torch.Tensor, items: torch.Tensor) -> list[torch.Tensor]:
        """The perturbation of every weight matrix for these users' candidates ``items [B, C]``."""
        c = self.config
        with torch.no_grad():
            labels = (torch.sigmoid(self.model.score_pairs(users, items)) > 0.5).float()
        deltas = [torch.zeros_like(w) for _, w, _ in self.matrices]
        steps, alpha = (1, c.eps) if c.method == "fgsm" else (c.steps, c.alpha or c.eps / c.steps)
        for _ in range(steps):
            with perturbed(self.matrices, deltas):
                grads = self._gradients(users, items, labels)
            with torch.no_grad():
                deltas = [
                    project(d + alpha * w.norm(dim=a, keepdim=True) * row_normalized(g, a), w, c.eps, a)
                    for d, g, (_, w, a) in zip(deltas, grads, self.matrices)
                ]
        return deltas


def attacked_scores(model, config: WeightAttackConfig, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Scores ``[B, C]`` of the candidates under the weight attack, ``batch_users`` users per perturbation."""
    attack = WeightAttack(model, config)
    out = []
    for s in range(0, len(users), config.batch_users):
        u, i = users[s : s + config.batch_users], items[s : s + config.batch_users]
        deltas = attack(u, i)
        with perturbed(attack.matrices, deltas), torch.no_grad():
            out.append(model.score_pairs(u, i))
    return torch.cat(out)
