"""What a poisoning cell measures on a trained victim: the targets' exposure to the real users
(T-HR@K, T-NDCG@K, HitOne@K, mean target rank; :mod:`distrec.metrics.targets`) and full-ranking
accuracy on the test split (Recall@20, NDCG@20); peers' definitions beside on request
(:mod:`distrec.metrics.peers`)."""

from __future__ import annotations

import numpy as np

from distrec.data.dataset import PreparedDataset
from distrec.data.matrix import UserItemCSR
from distrec.metrics.peers import peer_metrics
from distrec.metrics.ranking import full_ranking_metrics
from distrec.metrics.targets import target_mean_rank, target_metrics
from distrec.models.base import pick_device


def measure(model, dataset: PreparedDataset, targets: np.ndarray, n_real: int, ks=(10, 20, 50), peers=()) -> dict:
    """Target metrics of a trained victim over the ``n_real`` real users, and Recall/NDCG@20 on the test split;
    ``peers``: the peer tools whose target metrics to add (``arlib``, ``revadv``)."""
    model.eval()
    device = pick_device(getattr(model.config, "device", None))
    train = UserItemCSR.from_table(dataset.table("train"), dataset.n_users, dataset.n_items)
    test = UserItemCSR.from_table(dataset.table("test"), dataset.n_users, dataset.n_items)
    real = np.arange(n_real)
    out = target_metrics(model.score, train, targets, real, ks, device=device)
    out["mean_rank"] = target_mean_rank(model.score, train, targets, real, device=device)
    acc = full_ranking_metrics(model.score, train, test, (20,), device=device)
    out.update({"recall@20": acc["recall@20"], "ndcg@20": acc["ndcg@20"]})
    out.update(peer_metrics(peers, model.score, train, test, targets, n_real, ks, device=device))
    return out
