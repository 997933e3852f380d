"""Retrieval evaluation for metric-learning models: Recall@K over a pool of embeddings."""

from __future__ import annotations

import torch

from distrec.models.triplet import cross_distance


@torch.inference_mode()
def recall_at_k(
    embeddings: torch.Tensor, labels: torch.Tensor, metric: str, ks: tuple[int, ...] = (1,), chunk: int = 1000
) -> dict[str, float]:
    """Leave-one-out Recall@K over a pool: the share of items with a same-label item among their K
    nearest other items (AdvRank's R@1 on the test set)."""
    labels = labels.to(embeddings.device)
    hits = {k: 0 for k in ks}
    kmax = max(ks)
    for start in range(0, len(embeddings), chunk):
        d = cross_distance(embeddings[start : start + chunk], embeddings, metric)
        rows = torch.arange(len(d), device=d.device)
        d[rows, rows + start] = float("inf")
        nearest = d.topk(kmax, largest=False).indices
        same = labels[nearest] == labels[start : start + chunk, None]
        for k in ks:
            hits[k] += int(same[:, :k].any(1).sum())
    return {f"recall@{k}": 100.0 * hits[k] / len(embeddings) for k in ks}
