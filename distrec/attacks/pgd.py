"""Projected gradient descent on input images, in the torchattacks style: explicit ``eps``, ``alpha``,
``steps``, ``norm``, ``random_start``, a valid pixel range and a pluggable loss of the model's output.
Shared by the ranking attacks (on embeddings) and the image attacks on visually-aware recommenders."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

NORMS = ("linf", "l2")


def advrank_schedule(eps: float) -> tuple[float, int]:
    """AdvRank's PGD step and iteration count for an L-inf budget:
    alpha = min(max(eps / 10, 1/255), 0.01), steps = min(max(10, 2 eps / alpha), 30); no steps at eps = 0."""
    if eps <= 0:
        return 0.0, 0
    alpha = min(max(eps / 10, 1 / 255), 0.01)
    return alpha, int(min(max(10, 2 * eps / alpha), 30))


class PGD:
    """PGD that MINIMISES ``loss(model(x~))`` (summed over the batch) over x~ in the ``norm`` ball of
    radius ``eps`` around x, clamped to ``clamp`` (Madry et al. 2018; ``steps=1, alpha=eps`` is FGSM).
    ``random_start`` begins at a uniform point of the ball (L-inf) or a random direction inside it (L2).
    The model's parameters are frozen during the attack and restored afterwards.
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float,
        alpha: float,
        steps: int,
        norm: str = "linf",
        random_start: bool = False,
        clamp: tuple[float, float] = (0.0, 1.0),
        generator: torch.Generator | None = None,
    ):
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.model, self.eps, self.alpha, self.steps = model, eps, alpha, steps
        self.norm, self.random_start, self.clamp, self.generator = norm, random_start, clamp, generator

    def _project(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        delta = x - x0
        if self.norm == "linf":
            delta = delta.clamp(-self.eps, self.eps)
        else:
            norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
            delta = delta * (self.eps / norms).clamp(max=1.0)
        return (x0 + delta).clamp(*self.clamp)

    def _start(self, x0: torch.Tensor) -> torch.Tensor:
        if not self.random_start or self.eps == 0:
            return x0.clone()
        noise = torch.rand(x0.shape, generator=self.generator, device="cpu").to(x0) * 2 - 1
        if self.norm == "l2":
            noise = (
                noise
                / noise.flatten(1).norm(dim=1).view(-1, *[1] * (x0.dim() - 1))
                * torch.rand(len(x0), generator=self.generator).to(x0).view(-1, *[1] * (x0.dim() - 1))
            )
        return self._project(x0 + self.eps * noise, x0)

    def _step(self, grad: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return self.alpha * grad.sign()
        norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (grad.dim() - 1))
        return self.alpha * grad / norms

    def __call__(self, images: torch.Tensor, loss: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        x0 = images.detach()
        x = self._start(x0)
        if self.steps == 0:
            return x
        was_training = self.model.training
        frozen = [(p, p.requires_grad) for p in self.model.parameters()]
        self.model.eval()
        for p, _ in frozen:
            p.requires_grad_(False)
        try:
            for _ in range(self.steps):
                x.requires_grad_(True)
                (grad,) = torch.autograd.grad(loss(self.model(x)).sum(), x)
                x = self._project(x.detach() - self._step(grad), x0)
        finally:
            for p, flag in frozen:
                p.requires_grad_(flag)
            self.model.train(was_training)
        return x.detach()


class RankPGD(PGD):
    """PGD against a ranking objective with AdvRank's defaults: ``alpha``/``steps`` from
    :func:`advrank_schedule` unless given."""

    def __init__(self, model: nn.Module, eps: float, alpha: float | None = None, steps: int | None = None, **kw):
        default_alpha, default_steps = advrank_schedule(eps)
        super().__init__(
            model, eps, default_alpha if alpha is None else alpha, default_steps if steps is None else steps, **kw
        )
