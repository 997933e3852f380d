"""Vectorised full-ranking evaluation: every item is scored, the user's training items are masked.

Definitions (binary relevance, averaged over users with at least one test item), as in LightGCN's
evaluation code: Recall@K = hits@K / |test items|; Precision@K = hits@K / K; HR@K = 1 if hits@K > 0;
NDCG@K = DCG@K / IDCG@K with DCG = sum over hits of 1 / log2(rank + 1) and IDCG the DCG of
min(|test items|, K) hits at the top.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from distrec.data.matrix import UserItemCSR, contains


def masked_scores(
    score_fn: Callable[[torch.Tensor], torch.Tensor], users: np.ndarray, train: UserItemCSR, device
) -> torch.Tensor:
    """Scores ``[len(users), n_items]`` with each user's training items set to -inf.

    The training items' scores are overwritten in place, so ``score_fn`` returns a fresh tensor
    (a view, such as an expanded vector, is copied first)."""
    scores = score_fn(torch.as_tensor(users, device=device)).to(device=device, dtype=torch.float32)
    if scores._base is not None:
        scores = scores.clone()
    r, c = train.rows(users)
    scores[torch.as_tensor(r, device=device), torch.as_tensor(c, device=device)] = -torch.inf
    return scores


def masked_topk(
    score_fn: Callable[[torch.Tensor], torch.Tensor], users: np.ndarray, train: UserItemCSR, k: int, device
) -> torch.Tensor:
    """Top-``k`` item ids of each user in ``users``, the user's training items excluded (see :func:`masked_scores`)."""
    return torch.topk(masked_scores(score_fn, users, train, device), k, dim=1).indices


@torch.no_grad()
def full_ranking_metrics(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    train: UserItemCSR,
    test: UserItemCSR,
    ks: Sequence[int] = (10, 20),
    chunk_users: int = 1024,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """``score_fn(users) -> [len(users), n_items]`` (see :func:`masked_topk`); memory stays bounded by
    ``chunk_users`` x n_items."""
    users = evaluated_users(test)
    return combine_sums(ranking_sums(score_fn, train, test, users, ks, chunk_users, device), len(users), ks)


def evaluated_users(test: UserItemCSR) -> np.ndarray:
    """The users full-ranking metrics average over: those with at least one test item."""
    return np.flatnonzero(test.degrees() > 0)


@torch.no_grad()
def ranking_sums(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    train: UserItemCSR,
    test: UserItemCSR,
    users: np.ndarray,
    ks: Sequence[int],
    chunk_users: int = 1024,
    device: str | torch.device = "cpu",
) -> list[dict[str, float]]:
    """Per chunk of ``chunk_users`` users (in order), each metric summed over the chunk's users: the
    partial sums :func:`combine_sums` adds up, so any split of the users into whole chunks, scored
    anywhere, gives the same numbers as one pass."""
    test_keys = torch.as_tensor(test.keys(), device=device)
    max_k = max(ks)
    discounts = 1.0 / torch.log2(torch.arange(2, max_k + 2, dtype=torch.float64, device=device))
    chunks = []
    for s in range(0, len(users), chunk_users):
        batch = users[s : s + chunk_users]
        top = masked_topk(score_fn, batch, train, max_k, device)
        hits = contains(test_keys, torch.as_tensor(batch, device=device)[:, None] * test.n_items + top).double()
        n_rel = torch.as_tensor(test.degrees()[batch], device=device, dtype=torch.float64)
        sums = {}
        for k in ks:
            h = hits[:, :k].sum(1)
            dcg = (hits[:, :k] * discounts[:k]).sum(1)
            ideal_cum = torch.cumsum(discounts[:k], 0)
            idcg = ideal_cum[(n_rel.clamp(max=k) - 1).long()]
            sums[f"recall@{k}"] = (h / n_rel).sum().item()
            sums[f"ndcg@{k}"] = (dcg / idcg).sum().item()
            sums[f"precision@{k}"] = (h / k).sum().item()
            sums[f"hr@{k}"] = (h > 0).double().sum().item()
        chunks.append(sums)
    return chunks


def combine_sums(chunks: Sequence[dict[str, float]], n_users: int, ks: Sequence[int]) -> dict[str, float]:
    """The metrics at cutoffs ``ks`` of :func:`ranking_sums`' chunks, added in order and averaged over
    ``n_users``."""
    totals = {f"{m}@{k}": 0.0 for k in ks for m in ("recall", "ndcg", "precision", "hr")}
    for sums in chunks:
        for name, value in sums.items():
            totals[name] += value
    out = {name: value / max(n_users, 1) for name, value in totals.items()}
    out["n_users"] = int(n_users)
    return out
