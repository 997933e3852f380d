"""SimGCL (Yu et al., SIGIR 2022): graph contrastive learning with uniform noise instead of graph augmentation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from distrec.config import NonNegative, NonNegativeInt, Positive
from distrec.models.lightgcn import LightGCN, LightGCNConfig
from distrec.models.registry import register_victim


@dataclass
class SimGCLConfig(LightGCNConfig):
    eps: NonNegative = 0.1
    cl_temp: Positive = 0.2
    cl_reg: NonNegative = 0.2
    cl_nodes: NonNegativeInt = 0  # > 0: the InfoNCE over at most this many of a batch's users and of its items


@register_victim("simgcl")
class SimGCL(LightGCN):
    """Each propagated layer of a view gets noise sign(h) * eps * normalize(U(0,1)) (eq. 6); loss =
    BPR + cl_reg * InfoNCE between two noisy views, over the batch's users and items (eq. 7).
    As in the authors' code (SELFRec), layer 0 is left out of the layer mean, for training and scoring.
    Defaults are the paper's; on MovieLens, at temperature 0.2, SimGCL stays far below LightGCN whatever
    cl_reg (its views are mostly noise at initialisation); cl_temp 1.0 works (docs/benchmarks.md).

    Example::

        model = create_victim("simgcl", data.n_users, data.n_items, epochs=50, lr=0.001)
        model.fit(data)
    """

    description = "LightGCN with noise-perturbed views for contrastive learning"
    paper = "Yu et al., SIGIR 2022"

    Config = SimGCLConfig
    skip_ego = True

    def _noise(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        return h + torch.sign(h) * F.normalize(torch.rand_like(h), dim=-1) * self.config.eps

    def loss(self, users, pos, neg) -> torch.Tensor:
        rec = self.rec_loss(users, pos, *self.batch_triples(users, pos, neg))

        def noisy_view(nodes):  # fresh noise on every call: the two views differ
            return self.propagation.rows(self.embedding, self.adj, nodes, perturb=self._noise, skip_ego=self.skip_ego)

        return rec + self.config.cl_reg * self.view_contrast(
            users, pos, noisy_view, noisy_view, self.config.cl_temp, self.config.cl_nodes
        )
