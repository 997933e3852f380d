"""Attack objectives on a surrogate's scores, to be minimised by the fake data. Each is a sum over
real users, so it can be evaluated (and differentiated) in chunks of users."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ScoreBatch:
    """Scores ``[B, n_items]`` of a chunk of real users, the positions of their training items
    (``seen_rows``, ``seen_items``), the target ids, and (optionally) a constant weight per user."""

    scores: torch.Tensor
    seen_rows: torch.Tensor
    seen_items: torch.Tensor
    targets: torch.Tensor
    user_weights: torch.Tensor | None = None

    def masked(self) -> torch.Tensor:
        """The scores with training items at -inf (detached)."""
        s = self.scores.detach().clone()
        s[self.seen_rows, self.seen_items] = -torch.inf
        return s

    def eligible(self) -> torch.Tensor:
        """``[B, T]``: the user has not interacted with the target."""
        seen = torch.zeros(self.scores.shape, dtype=torch.bool, device=self.scores.device)
        seen[self.seen_rows, self.seen_items] = True
        return ~seen[:, self.targets]


def target_cross_entropy(batch: ScoreBatch) -> torch.Tensor:
    """RevAdv's adversarial loss (Tang, Wen, Wang 2020): the cross-entropy of the softmax over items of
    each real user's scores against the target items, L = - sum_u w_u sum_t log softmax(r_u)_t
    (w_u = 1 unless the batch carries user weights)."""
    per_user = -torch.log_softmax(batch.scores, dim=1)[:, batch.targets].sum(1)
    return (per_user if batch.user_weights is None else per_user * batch.user_weights).sum()


def target_score_loss(batch: ScoreBatch) -> torch.Tensor:
    """PGA's integrity utility (Li, Wang, Singh, Vorobeychik, NeurIPS 2016, section 3): the targets' predicted
    scores summed over the real users who have not interacted with them, negated to be minimised,
    L = - sum_u w_u sum_t e_ut r_ut."""
    per_user = (batch.scores[:, batch.targets] * batch.eligible().float()).sum(1)
    return -(per_user if batch.user_weights is None else per_user * batch.user_weights).sum()


@dataclass
class DifficultyDiversityLoss:
    """DADA's objective (Li, Di, Chen, NeurIPS 2022), in the form distrec uses (the paper leaves the
    exact weighting open; this is written down here). For real user u and target t let
    m_ut = (r_ut - tau_u) / sigma_u, the margin of the target over u's K-th best other unseen item,
    in units of u's score standard deviation. Then

        L = sum_u w_u sum_t e_ut d_ut softplus(-m_ut / gamma)

    - difficulty-aware: d_ut = exp(-max(0, -m_ut) / beta) puts the budget on users the target can
      still reach (a small negative margin) rather than on hopeless ones;
    - diversity-aware: w_u = 1 / (1 + #targets already in u's top-K) moves effort to users no target
      reaches yet (what HitOne@K counts);
    - e_ut = 1 if u has not interacted with t (T-HR's eligible users).
    The weights are constants of each step (no gradient through them)."""

    k: int = 10
    beta: float = 1.0
    gamma: float = 0.5

    def __call__(self, batch: ScoreBatch) -> torch.Tensor:
        masked = batch.masked()
        masked[:, batch.targets] = -torch.inf
        tau = torch.topk(masked, self.k, dim=1).values[:, -1:]
        sigma = batch.scores.detach().std(dim=1, keepdim=True).clamp_min(1e-8)
        margin = (batch.scores[:, batch.targets] - tau) / sigma
        with torch.no_grad():
            eligible = batch.eligible().float()
            difficulty = torch.exp(-torch.relu(-margin) / self.beta)
            diversity = 1.0 / (1.0 + ((margin > 0).float() * eligible).sum(1, keepdim=True))
        return (diversity * eligible * difficulty * torch.nn.functional.softplus(-margin / self.gamma)).sum()
