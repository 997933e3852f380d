"""RAPU (Zhang, Tian, Li, Su, Yang, Zhao, Gao, KDD 2021): a poisoning attack for an attacker whose copy
of the data is incomplete and perturbed (the threat-model keys ``knowledge`` / ``knowledge_noise``
make that copy; :func:`distrec.attacks.budget.attacker_view`).

RAPU's outer loop is RevAdv's (a surrogate retrained on real + fake data, the poison gradient through
its training, row-normalised SGD with momentum) with two changes, as distrec implements them:

- reliability: the attacker does not trust every interaction it holds. After each retraining, each
  observed interaction's residual e = 1 - s_ui under the surrogate is modelled as a two-component
  mixture, genuine e ~ N(0, sigma^2) with prior pi, perturbed e ~ Laplace(1, b); ``em_steps`` EM steps
  fit pi; a user's reliability is the mean posterior of its interactions being genuine, and the
  target cross-entropy is weighted by it (normalised to mean 1), so the poison aims at the users
  whose data the attacker can trust;
- projection: the continuous fake data plus ``popularity_smooth`` x the item popularity (scaled to
  [0, 1]) is projected onto each fake user's top ``n_filler`` items (the official code's
  popularity-enhanced top-k projection), so fillers lean to items many real users hold.

The official code also runs an EM inside the surrogate's own training; that is not reproduced here:
the surrogate is any of distrec's differentiable ones, trained on the attacker's view."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from distrec.attacks.base import AttackContext
from distrec.attacks.gradient import GradientAttack, GradientAttackConfig
from distrec.attacks.objectives import ScoreBatch, target_cross_entropy
from distrec.attacks.profiles import project_profiles
from distrec.attacks.registry import register_attack
from distrec.attacks.surrogates import Factors
from distrec.config import Positive, Share


@dataclass
class RAPUConfig(GradientAttackConfig):
    sigma: Positive = 0.5
    b: Positive = 0.5
    prior: Share = 0.9
    em_steps: int = 10
    popularity_smooth: float = 1.0


def genuine_posterior(
    residuals: torch.Tensor, sigma: float, b: float, prior: float, steps: int
) -> tuple[torch.Tensor, float]:
    """EM for the share ``pi`` of genuine interactions in the mixture pi N(0, sigma^2) + (1 - pi) Laplace(1, b)
    of the residuals; returns each residual's posterior of being genuine and the fitted ``pi``."""
    log_g = -0.5 * (residuals / sigma) ** 2 - math.log(sigma * math.sqrt(2 * math.pi))
    log_p = -(residuals - 1.0).abs() / b - math.log(2 * b)
    pi = prior
    for _ in range(max(steps, 1)):
        post = torch.sigmoid(log_g - log_p + math.log(pi / (1 - pi)))
        pi = float(post.mean().clamp(1e-4, 1 - 1e-4))
    return post, pi


@register_attack("rapu")
class RAPU(GradientAttack):
    """RevAdv's outer loop with reliability-weighted users and popularity-smoothed projection (module doc).

    Example::

        attack = create_attack("rapu", outer_steps=30, lr=1.0)
        fake = attack.craft(ctx, surrogate)
    """

    description = "RevAdv's outer loop with reliability-weighted users and a popularity-smoothed projection"
    paper = "Zhang et al., KDD 2021"

    Config = RAPUConfig

    def objective(self, batch: ScoreBatch) -> torch.Tensor:
        return target_cross_entropy(batch)

    def user_weights(self, factors: Factors, ctx: AttackContext) -> torch.Tensor:
        """Each real user's mean posterior of holding genuine interactions, normalised to mean 1."""
        cfg, n = self.config, factors.users.shape[0]
        rows, cols, count = self._interactions(ctx, n, factors.items.device)
        with torch.no_grad():
            scores = (factors.users[rows] * factors.items[cols]).sum(1)
            post, self.genuine_share = genuine_posterior(1.0 - scores, cfg.sigma, cfg.b, cfg.prior, cfg.em_steps)
            total = torch.zeros(n, device=post.device).index_add_(0, rows, post)
            reliability = torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))
        return reliability / reliability.mean().clamp_min(1e-12)

    def _interactions(self, ctx: AttackContext, n: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The (user, item) index tensors of the first ``n`` users' training interactions and each user's
        count, built once per training matrix (the attack loss asks for them every step)."""
        train, where, index = getattr(self, "_index", (None, None, None))
        if train is not ctx.train or where != str(device) or len(index[2]) != n:
            r, c = ctx.train.rows(np.arange(n))
            rows, cols = torch.as_tensor(r, device=device), torch.as_tensor(c, device=device)
            index = (
                rows,
                cols,
                torch.zeros(n, device=device).index_add_(0, rows, torch.ones(len(rows), device=device)),
            )
            self._index = (ctx.train, str(device), index)
        return index

    def project(self, values: torch.Tensor, ctx: AttackContext) -> torch.Tensor:
        pop = torch.as_tensor(ctx.popularity(), dtype=values.dtype, device=values.device)
        return project_profiles(
            values + self.config.popularity_smooth * pop / pop.max().clamp_min(1), ctx.targets, ctx.budget.n_filler
        )
