"""Differentiable optimiser steps, for surrogates whose last training steps are unrolled so that an
attack loss on the trained parameters has a gradient w.r.t. the data they were trained on."""

from __future__ import annotations

import torch

BETAS, EPS = (0.9, 0.999), 1e-8


def adam_update(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avg: list[torch.Tensor],
    exp_avg_sq: list[torch.Tensor],
    t: int,
    lr: float,
):
    """One Adam step (Kingma & Ba 2015, Algorithm 1) written with differentiable tensor operations:
    returns the new parameters and moments, each a function of the inputs that autograd can go through."""
    b1, b2 = BETAS
    m = [b1 * mi + (1 - b1) * g for mi, g in zip(exp_avg, grads)]
    v = [b2 * vi + (1 - b2) * g * g for vi, g in zip(exp_avg_sq, grads)]
    c1, c2 = 1 - b1**t, 1 - b2**t
    new = [p - lr * (mi / c1) / ((vi / c2 + 1e-30).sqrt() + EPS) for p, mi, vi in zip(params, m, v)]
    return new, m, v
