"""SGL (Wu et al., SIGIR 2021): LightGCN plus contrastive learning between two graph augmentations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from distrec.config import HalfOpenShare, NonNegative, NonNegativeInt, Positive
from distrec.data.dataset import PreparedDataset
from distrec.models.graph import bipartite_edge_index, normalized_adjacency
from distrec.models.lightgcn import LightGCN, LightGCNConfig
from distrec.models.registry import register_victim


@dataclass
class SGLConfig(LightGCNConfig):
    aug: Literal["ed", "nd"] = "ed"
    ssl_ratio: HalfOpenShare = 0.1
    ssl_temp: Positive = 0.2
    ssl_reg: NonNegative = 0.1
    ssl_nodes: NonNegativeInt = 0  # > 0: the InfoNCE over at most this many of a batch's users and of its items


@register_victim("sgl")
class SGL(LightGCN):
    """Loss = BPR + ssl_reg * (InfoNCE over batch users + InfoNCE over batch items) between two views
    (eq. 10-11). Views are redrawn every epoch: ``ed`` edge dropout (each interaction kept with
    probability 1 - ssl_ratio) or ``nd`` node dropout (each node with its edges), then renormalised.
    Defaults are the paper's (Yelp / Amazon); on MovieLens the InfoNCE gradient is 13x the BPR one at
    initialisation with ssl_reg 0.1 and SGL never learns to rank, ssl_reg 0.01 works (docs/benchmarks.md).

    Example::

        model = create_victim("sgl", data.n_users, data.n_items, epochs=50, lr=0.001)
        model.fit(data)
    """

    description = "LightGCN with self-supervised graph augmentation (InfoNCE between two views)"
    paper = "Wu et al., SIGIR 2021"

    Config = SGLConfig

    def __init__(self, n_users: int, n_items: int, **config):
        super().__init__(n_users, n_items, **config)
        self.views: list[torch.Tensor] = []

    def prepare_fit(self, dataset: PreparedDataset, device: torch.device) -> None:
        super().prepare_fit(dataset, device)
        train = dataset.table("train")
        self._pairs = np.unique(
            np.stack([train.column("user_id").to_numpy(), train.column("item_id").to_numpy()]).T, axis=0
        )

    def _view(self, rng: np.random.Generator) -> torch.Tensor:
        users, items = self._pairs[:, 0], self._pairs[:, 1]
        if self.config.aug == "ed":
            keep = rng.random(len(users)) >= self.config.ssl_ratio
        else:
            user_kept = rng.random(self.n_users) >= self.config.ssl_ratio
            item_kept = rng.random(self.n_items) >= self.config.ssl_ratio
            keep = user_kept[users] & item_kept[items]
        edge_index = bipartite_edge_index(users[keep], items[keep], self.n_users)
        return normalized_adjacency(edge_index, self.n_users + self.n_items).to(self.embedding.device)

    def start_epoch(self, epoch: int) -> None:
        rng = np.random.default_rng([self.config.seed, epoch])
        self.views = [self._view(rng), self._view(rng)]

    def loss(self, users, pos, neg) -> torch.Tensor:
        rec = self.rec_loss(users, pos, *self.batch_triples(users, pos, neg))
        view1, view2 = (
            (lambda nodes, adj=adj: self.propagation.rows(self.embedding, adj, nodes)) for adj in self.views
        )
        return rec + self.config.ssl_reg * self.view_contrast(
            users, pos, view1, view2, self.config.ssl_temp, self.config.ssl_nodes
        )
