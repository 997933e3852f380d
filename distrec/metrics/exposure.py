"""Exposure of target items (the backdoor paper's metric, docs/methods.md section 6): for every (user, target)
pair with the target not in the user's history, the target's rank among all items the user has not seen;
HR@K = the share of pairs ranked <= K, NDCG@K = the mean of 1 / log2(rank + 1) over pairs ranked <= K
(0 otherwise)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from distrec.data.matrix import UserItemCSR


def target_ranks(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    users: np.ndarray,
    seen: UserItemCSR,
    targets: np.ndarray,
    chunk_users: int = 512,
) -> np.ndarray:
    """1-based ranks of every target for every user (NaN where the user has already seen the target)."""
    targets_t = torch.as_tensor(targets, dtype=torch.long)
    out = []
    for s in range(0, len(users), chunk_users):
        batch = users[s : s + chunk_users]
        with torch.no_grad():
            scores = score_fn(torch.as_tensor(batch)).float().cpu()
        rows = np.repeat(np.arange(len(batch)), seen.degrees()[batch])
        cols = (
            np.concatenate([seen.indices[seen.indptr[u] : seen.indptr[u + 1]] for u in batch])
            if len(batch)
            else np.zeros(0, np.int64)
        )
        masked = torch.zeros_like(scores, dtype=torch.bool)
        masked[torch.as_tensor(rows), torch.as_tensor(cols, dtype=torch.long)] = True
        scores[masked] = -torch.inf
        t = scores[:, targets_t]
        # 1 + the number of items scored strictly above the target, by binary search in the sorted row
        ranks = (1 + scores.shape[1] - torch.searchsorted(scores.sort(1).values, t.contiguous(), right=True)).double()
        ranks[masked[:, targets_t]] = float("nan")
        out.append(ranks.numpy())
    return np.concatenate(out) if out else np.zeros((0, len(targets)))


def exposure_metrics(ranks: np.ndarray, ks: Sequence[int] = (10, 20)) -> dict[str, float]:
    """HR@K and NDCG@K of the targets over every (user, target) pair with a rank."""
    r = ranks[~np.isnan(ranks)]
    out = {"pairs": int(r.size)}
    for k in ks:
        hit = r <= k
        out[f"hr@{k}"] = float(hit.mean()) if r.size else 0.0
        out[f"ndcg@{k}"] = float((hit / np.log2(r + 1)).mean()) if r.size else 0.0
    return out
