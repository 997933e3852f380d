"""Target-item metrics for promotion attacks (docs/methods.md section 2).

For target item t, the eligible users are the real (non-fake) users who have not interacted with t
in training. T-HR@K(t) = share of eligible users with t in their top-K (training items masked);
T-NDCG@K(t) = mean over eligible users of 1 / log2(rank + 1) when t is in the top-K, else 0 (one
relevant item, so IDCG = 1). Both are averaged over the targets. HitOne@K = share of real users with
at least one target in their top-K. Fake users never count.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from distrec.data.matrix import UserItemCSR, contains
from distrec.metrics.ranking import masked_scores, masked_topk


@torch.no_grad()
def target_metrics(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    train: UserItemCSR,
    targets: Sequence[int],
    real_users: np.ndarray,
    ks: Sequence[int] = (10, 20, 50),
    chunk_users: int = 1024,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """``real_users``: ids of the users to measure (all non-fake users); ``score_fn`` as in :func:`masked_topk`."""
    targets_t = torch.as_tensor(np.asarray(targets), device=device)
    train_keys = torch.as_tensor(train.keys(), device=device)
    max_k = max(ks)
    rank = torch.arange(1, max_k + 1, device=device, dtype=torch.float64)
    hits = {k: torch.zeros(len(targets), dtype=torch.float64, device=device) for k in ks}
    gains = {k: torch.zeros(len(targets), dtype=torch.float64, device=device) for k in ks}
    hit_one = {k: 0.0 for k in ks}
    eligible = torch.zeros(len(targets), dtype=torch.float64, device=device)
    for s in range(0, len(real_users), chunk_users):
        batch = np.asarray(real_users[s : s + chunk_users])
        top = masked_topk(score_fn, batch, train, max_k, device)  # [B, max_k]
        match = top[:, :, None] == targets_t[None, None, :]  # [B, max_k, T]
        ok = ~contains(
            train_keys, torch.as_tensor(batch, device=device)[:, None] * train.n_items + targets_t[None, :]
        )  # [B, T] eligible
        eligible += ok.double().sum(0)
        for k in ks:
            in_top = match[:, :k, :].any(1)  # [B, T]
            hits[k] += (in_top & ok).double().sum(0)
            gain = (match[:, :k, :].double() / torch.log2(rank[:k] + 1)[None, :, None]).sum(1)
            gains[k] += (gain * ok).sum(0)
            hit_one[k] += in_top.any(1).double().sum().item()
    out = {}
    denom = eligible.clamp_min(1)
    for k in ks:
        out[f"t_hr@{k}"] = float((hits[k] / denom).mean())
        out[f"t_ndcg@{k}"] = float((gains[k] / denom).mean())
        out[f"hitone@{k}"] = hit_one[k] / max(len(real_users), 1)
    return out


@torch.no_grad()
def target_mean_rank(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    train: UserItemCSR,
    targets: Sequence[int],
    real_users: np.ndarray,
    chunk_users: int = 1024,
    device: str | torch.device = "cpu",
) -> float:
    """Mean over targets of the mean 1-based rank of the target among each eligible user's non-training
    items (1 = top): a finer signal than T-HR@K when attacks move targets without reaching the top-K."""
    targets_t = torch.as_tensor(np.asarray(targets), device=device)
    train_keys = torch.as_tensor(train.keys(), device=device)
    rank_sum = torch.zeros(len(targets), dtype=torch.float64, device=device)
    eligible = torch.zeros(len(targets), dtype=torch.float64, device=device)
    for s in range(0, len(real_users), chunk_users):
        batch = np.asarray(real_users[s : s + chunk_users])
        scores = masked_scores(score_fn, batch, train, device)
        target_scores = scores[:, targets_t]  # [B, T]
        ranks = 1 + (scores[:, None, :] > target_scores[:, :, None]).sum(-1).double()  # [B, T]
        ok = ~contains(train_keys, torch.as_tensor(batch, device=device)[:, None] * train.n_items + targets_t[None, :])
        rank_sum += (ranks * ok).sum(0)
        eligible += ok.double().sum(0)
    return float((rank_sum / eligible.clamp_min(1)).mean())


def target_metric_names(ks) -> list[str]:
    """The names :func:`target_metrics` and :func:`target_mean_rank` report for cutoffs ``ks``."""
    return [f"{m}@{k}" for m in ("t_hr", "t_ndcg", "hitone") for k in ks] + ["mean_rank"]
