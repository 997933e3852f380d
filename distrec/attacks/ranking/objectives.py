"""Adversarial ranking objectives (Zhou et al., "Adversarial Ranking Attack and Defense", ECCV 2020).

Each objective is built for a batch of attacked images and returns, per image, a loss to MINIMISE
over its embedding, and the rank percentile (%) of its targets in the candidate pool X (0 = top,
50 = random). With d the distance and [.]_+ the hinge:

- L_CA+: raise candidate c~ for queries Q:   mean_{q in Q, x in X} [d(q, c~) - d(q, x)]_+
- L_CA-: lower it:                           mean_{q in Q, x in X} [d(q, x) - d(q, c~)]_+
- L_QA+: perturb query q~ to raise C:        mean_{c in C, x in X} [d(q~, c) - d(q~, x)]_+
- L_QA-: lower C:                            mean_{c in C, x in X} [d(q~, x) - d(q~, c)]_+
- L_SP-QA: QA plus xi * QA+ over C_SP, the query's own top-G, to keep the rest of its ranking.
- Embedding shift (EST's inner maximisation): -d(f(x~), f(x)).

The means are those of the paper's sums divided by |Q||X| (or |C||X|), as in the reference code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distrec.models.triplet import cross_distance, pair_distance


class RankingObjective:
    """Loss (to minimise) and rank percentile of a batch of attacked embeddings ``[B, D]``."""

    def __call__(self, embeddings: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def rank(self, embeddings: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def hinge_mean(sorted_pool: torch.Tensor, prefix: torch.Tensor, target: torch.Tensor, direction: str) -> torch.Tensor:
    """mean_x [target - d_x]_+ ('+') or mean_x [d_x - target]_+ ('-') for each target, exactly, from the
    pool distances sorted ascending (``[..., N]``) and their prefix sums S_0..S_N (``[..., N + 1]``):
    sum_x [a - d_x]_+ = n a - S_n with n = #{d_x < a}, and sum_x [d_x - a]_+ = (S_N - S_n) - (N - n) a
    with n = #{d_x <= a}. Gradients reach ``target`` and, through the sort, the pool distances."""
    n_pool = sorted_pool.shape[-1]
    n = torch.searchsorted(sorted_pool.detach(), target.detach(), right=direction == "-")
    below = prefix.gather(-1, n)
    if direction == "+":
        total = n * target - below
    else:
        total = (prefix[..., -1:] - below) - (n_pool - n) * target
    return total / n_pool


def rank_percentile(sorted_pool: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """100 #{x: d_x < target} / N for each target."""
    return 100.0 * torch.searchsorted(sorted_pool, target).float() / sorted_pool.shape[-1]


def _check(direction: str) -> str:
    if direction not in ("+", "-"):
        raise ValueError(f"direction must be '+' or '-', got {direction!r}")
    return direction


def _sorted_with_prefix(distances: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ordered = distances.sort(dim=-1).values.contiguous()
    return ordered, F.pad(ordered.cumsum(-1), (1, 0))


class CandidateObjective(RankingObjective):
    """L_CA+ / L_CA- for candidates attacked against ``queries`` ``[B, W, D]`` over ``pool`` ``[N, D]``.
    The queries and the pool do not move, so d(q, X) is computed and sorted once; a PGD step then
    costs O(W log N) beyond the network (:func:`hinge_mean`)."""

    def __init__(self, queries: torch.Tensor, pool: torch.Tensor, metric: str, direction: str):
        self.queries, self.metric, self.direction = queries, metric, _check(direction)
        self.sorted, self.prefix = _sorted_with_prefix(cross_distance(queries, pool, metric))  # [B, W, N]

    def _target(self, embeddings: torch.Tensor) -> torch.Tensor:
        return pair_distance(embeddings[:, None, :], self.queries, self.metric)[..., None]  # d(q, c~) [B, W, 1]

    def __call__(self, embeddings: torch.Tensor) -> torch.Tensor:
        return hinge_mean(self.sorted, self.prefix, self._target(embeddings), self.direction).mean((1, 2))

    @torch.no_grad()
    def rank(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Mean over the queries of 100 #{x: d(q, x) < d(q, c~)} / N."""
        return rank_percentile(self.sorted, self._target(embeddings)).mean((1, 2))


class QueryObjective(RankingObjective):
    """L_QA+ / L_QA- for queries attacked against ``candidates`` ``[B, M, D]``; with ``preserve``
    ``[B, G, D]`` and ``xi`` it is L_SP-QA. The query moves, so d(q~, X) is recomputed and sorted
    each step (:func:`hinge_mean`; the sort is differentiable)."""

    def __init__(
        self,
        candidates: torch.Tensor,
        pool: torch.Tensor,
        metric: str,
        direction: str,
        preserve: torch.Tensor | None = None,
        xi: float = 0.0,
    ):
        self.candidates, self.pool, self.metric, self.direction = candidates, pool, metric, _check(direction)
        self.preserve, self.xi = preserve, xi

    def _distances(self, embeddings, targets):
        return pair_distance(embeddings[:, None, :], targets, self.metric)  # [B, K]

    def __call__(self, embeddings: torch.Tensor) -> torch.Tensor:
        ordered, prefix = _sorted_with_prefix(cross_distance(embeddings, self.pool, self.metric))  # d(q~, X) [B, N]
        loss = hinge_mean(ordered, prefix, self._distances(embeddings, self.candidates), self.direction).mean(1)
        if self.preserve is not None and self.xi:
            loss = loss + self.xi * hinge_mean(ordered, prefix, self._distances(embeddings, self.preserve), "+").mean(1)
        return loss

    def _rank(self, embeddings, targets) -> torch.Tensor:
        ordered = cross_distance(embeddings, self.pool, self.metric).sort(dim=-1).values.contiguous()
        return rank_percentile(ordered, self._distances(embeddings, targets)).mean(1)

    @torch.no_grad()
    def rank(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Mean over the candidates of 100 #{x: d(q~, x) < d(q~, c)} / N."""
        return self._rank(embeddings, self.candidates)

    @torch.no_grad()
    def preserve_rank(self, embeddings: torch.Tensor) -> torch.Tensor | None:
        """Rank percentile of the SP set (how much of the query's own top-G it keeps)."""
        return None if self.preserve is None else self._rank(embeddings, self.preserve)


class EmbeddingShiftObjective(RankingObjective):
    """EST's inner problem, max_{x~} d(f(x~), f(x)): move f(x~) as far as possible from the clean f(x), i.e.
    minimise -d."""

    def __init__(self, reference: torch.Tensor, metric: str):
        self.reference, self.metric = reference.detach(), metric

    def __call__(self, embeddings: torch.Tensor) -> torch.Tensor:
        return -pair_distance(embeddings, self.reference, self.metric)

    @torch.no_grad()
    def rank(self, embeddings: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("the embedding shift has no target ranking")
