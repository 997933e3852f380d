"""Retrieval evaluation for metric-learning models: embeddings of a pool and Recall@K."""

from __future__ import annotations

import torch

from distrec.data.labeled_images import LabeledImages
from distrec.models.embedding import Embedder
from distrec.models.triplet import cross_distance


@torch.no_grad()
def embed_pool(model: Embedder, data: LabeledImages, batch_size: int = 1000) -> torch.Tensor:
    """Embeddings of every image (the model in eval mode), on the model's device; plain tensors (not
    inference-mode ones), so attacks can build autograd graphs on them."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = torch.cat([model(data.floats(slice(i, i + batch_size)).to(device)) for i in range(0, len(data), batch_size)])
    model.train(was_training)
    return out


@torch.inference_mode()
def recall_at_k(embeddings: torch.Tensor, labels: torch.Tensor, metric: str, ks: tuple[int, ...] = (1,), chunk: int = 1000) -> dict[str, float]:
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
