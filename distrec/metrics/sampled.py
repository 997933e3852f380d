"""The sampled leave-one-out protocol of NCF (He et al., WWW 2017), used by DeepCF and RAWP-FT: each test
user's held-out item is ranked among itself and the user's stored ``test_negatives`` (99 in the
papers); HR@K = share of users whose held-out item is in the top K, NDCG@K = mean of
1 / log2(rank + 2) over those users (rank 0 = top). Ties count against the model (a negative scored
equal to the held-out item ranks above it), so a model with constant scores gets HR@10 = 0, not 1. A
negative that is the held-out item itself (NCF's ML-1M file lists it for 156 users) is not counted: NCF's
evaluation scores the candidates in a dict keyed by item, which collapses it into the held-out item."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa
import torch


def candidates(test: pa.Table, negatives: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Per test user (one held-out item each): the user ids and ``[held-out, negatives...]`` item ids."""
    users = np.array(test.column("user_id").to_numpy())
    items = np.array(test.column("item_id").to_numpy())
    if len(np.unique(users)) != len(users):
        raise ValueError("the sampled protocol needs one held-out item per test user (prepare with --split loo)")
    neg_users = negatives.column("user_id").to_numpy()
    lookup = dict(zip(neg_users.tolist(), range(len(neg_users))))
    missing = sorted(set(users.tolist()) - set(lookup))
    if missing:
        raise ValueError(f"test users {missing[:5]} have no test_negatives row")
    flat = negatives.column("item_ids").combine_chunks()
    neg = flat.values.to_numpy().reshape(len(neg_users), -1)
    return users, np.concatenate([items[:, None], neg[[lookup[u] for u in users.tolist()]]], 1)


@torch.no_grad()
def sampled_metrics(
    score_pairs: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    users: np.ndarray,
    items: np.ndarray,
    ks: Sequence[int] = (10,),
    chunk_users: int = 1024,
    device="cpu",
) -> dict[str, float]:
    """``score_pairs(users [B], items [B, C]) -> scores [B, C]``; column 0 of ``items`` is the held-out item."""
    ranks = []
    for s in range(0, len(users), chunk_users):
        u = torch.as_tensor(users[s : s + chunk_users], device=device)
        block = torch.as_tensor(items[s : s + chunk_users], device=device)
        scores = score_pairs(u, block).float()
        above = (scores[:, 1:] >= scores[:, :1]) & (block[:, 1:] != block[:, :1])
        ranks.append(above.sum(1).cpu())
    rank = torch.cat(ranks).double()
    out = {}
    for k in ks:
        hit = rank < k
        out[f"hr@{k}"] = float(hit.double().mean())
        out[f"ndcg@{k}"] = float((hit.double() / torch.log2(rank + 2)).mean())
    return out
