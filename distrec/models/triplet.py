"""Distances in embedding space and the triplet ranking loss used to train retrieval models."""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_MARGIN = {"cosine": 0.2, "euclidean": 1.0}


def pair_distance(a: torch.Tensor, b: torch.Tensor, metric: str) -> torch.Tensor:
    """d(a_i, b_i) along the last axis (broadcasting): ``1 - <a, b>`` for L2-normalised embeddings
    under ``cosine``, ``||a - b||_2`` under ``euclidean``."""
    if metric == "cosine":
        return 1.0 - (a * b).sum(-1)
    return (a - b).norm(dim=-1)


def cross_distance(a: torch.Tensor, pool: torch.Tensor, metric: str) -> torch.Tensor:
    """d(a_..., x) for every pool row x: ``[..., D] x [N, D] -> [..., N]``."""
    if metric == "cosine":
        return 1.0 - a @ pool.T
    shape = a.shape[:-1]
    return torch.cdist(a.reshape(-1, a.shape[-1]), pool).reshape(*shape, len(pool))


def sample_triplets(
    labels: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class-balanced random triplets inside a batch (AdvRank's sampling): for every class present, as
    many anchors as the batch has rows / classes, a positive of the same class and a negative of
    another class, all drawn with replacement. Returns row indices (anchor, positive, negative)."""
    classes = labels.unique()
    per_class = max(1, len(labels) // len(classes))
    anchors, positives, negatives = [], [], []
    for c in classes:
        same = (labels == c).nonzero().squeeze(1)
        other = (labels != c).nonzero().squeeze(1)
        if len(other) == 0:
            raise ValueError("a triplet batch needs at least two classes")
        pick = lambda rows: rows[torch.randint(len(rows), (per_class,), generator=generator)]  # noqa: E731
        anchors.append(pick(same))
        positives.append(pick(same))
        negatives.append(pick(other))
    return torch.cat(anchors), torch.cat(positives), torch.cat(negatives)


def triplet_loss(
    embeddings: torch.Tensor, labels: torch.Tensor, metric: str, margin: float, generator: torch.Generator
) -> torch.Tensor:
    """Triplet loss (Schroff et al. 2015; AdvRank eq. 1 training objective):
    mean over sampled triplets of ``[d(a, p) - d(a, n) + margin]_+``."""
    a, p, n = sample_triplets(labels, generator)
    d_ap = pair_distance(embeddings[a], embeddings[p], metric)
    d_an = pair_distance(embeddings[a], embeddings[n], metric)
    return F.relu(d_ap - d_an + margin).mean()
