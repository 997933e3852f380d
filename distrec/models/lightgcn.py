"""LightGCN (He et al., SIGIR 2020): embeddings smoothed over the normalised user-item graph."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from distrec.config import NonNegativeInt, Positive
from distrec.data.dataset import PreparedDataset
from distrec.data.matrix import contains
from distrec.data.streaming import positive_keys
from distrec.models.base import set_seed
from distrec.models.graph import LightGCNPropagation, bipartite_edge_index, normalized_adjacency
from distrec.models.indexing import take_rows
from distrec.models.losses import bpr_loss, info_nce, l2_reg, pair_scores, sampled_softmax_loss
from distrec.models.registry import register_victim
from distrec.models.trainer import PairwiseVictim, TrainConfig

REC_LOSSES = ("bpr", "ssm")


@dataclass
class LightGCNConfig(TrainConfig):
    """``rec_loss``: ``bpr`` (the paper's, eq. 15) or ``ssm`` (sampled softmax at ``ssm_temp``,
    :func:`~distrec.models.losses.sampled_softmax_loss`) over the row's ``num_negatives`` negatives or,
    with ``shared_negatives`` n > 0, over n items drawn uniformly per batch and shared by its rows (one
    matrix product instead of n negatives a row to sample and gather).

    ``dns_candidates`` n > 1 (BPR, one negative a row): dynamic negative sampling (DNS, Zhang et al.,
    SIGIR 2013): a row's negative is the highest-scoring under the current model of n candidates, the
    stream's negative and n - 1 uniform draws that are not among the user's training items."""

    dim: int = 64
    layers: int = 3
    reg: float = 1e-4
    rec_loss: Literal[REC_LOSSES] = "bpr"
    ssm_temp: Positive = 0.1
    shared_negatives: NonNegativeInt = 0
    dns_candidates: NonNegativeInt = 0

    def __post_init__(self):
        super().__post_init__()
        if self.shared_negatives and self.rec_loss != "ssm":
            raise ValueError(
                f"shared_negatives must be 0, or positive with rec_loss 'ssm', got {self.shared_negatives} with "
                f"{self.rec_loss!r}"
            )
        if self.dns_candidates > 1 and (self.rec_loss != "bpr" or self.num_negatives != 1):
            raise ValueError(
                "dns_candidates picks one negative a row for BPR: needs rec_loss 'bpr' and num_negatives 1, got "
                f"{self.rec_loss!r} and {self.num_negatives}"
            )


@register_victim("lightgcn")
class LightGCN(PairwiseVictim):
    """Final embeddings E = mean_k A~^k E0 (eq. 4), score = e_u . e_i (eq. 5), BPR loss with L2 on
    the batch's ego embeddings E0 (eq. 15), as in the official implementation.

    Example::

        model = create_victim("lightgcn", data.n_users, data.n_items, epochs=50, lr=0.001)
        model.fit(data)
    """

    description = "Graph collaborative filtering: the mean of propagated embeddings, no transforms"
    paper = "He et al., SIGIR 2020"

    Config = LightGCNConfig
    skip_ego = False  # leave E^(0) out of the layer mean

    def __init__(self, n_users: int, n_items: int, **config):
        super().__init__(n_users, n_items, **config)
        gen = set_seed(self.config.seed)
        self.embedding = torch.nn.Parameter(torch.randn(n_users + n_items, self.config.dim, generator=gen) * 0.1)
        self.propagation = LightGCNPropagation(self.config.layers)
        self.adj: torch.Tensor | None = None
        self._final: torch.Tensor | None = None
        self._sample_gen = torch.Generator().manual_seed(
            self.config.seed + 1
        )  # shared and DNS negatives, contrast nodes
        self._positive_keys: torch.Tensor | None = None  # sorted user * n_items + item of the graph's edges (DNS)

    def set_graph(self, users, items) -> None:
        """Use the interactions ``(users, items)`` (numpy internal ids) as the propagation graph."""
        edge_index = bipartite_edge_index(users, items, self.n_users)
        self.adj = normalized_adjacency(edge_index, self.n_users + self.n_items).to(self.embedding.device)
        self._positive_keys = torch.from_numpy(positive_keys(users, items, self.n_items)).to(self.embedding.device)
        self._final = None

    def prepare_fit(self, dataset: PreparedDataset, device: torch.device) -> None:
        self.attach(dataset)

    def attach(self, dataset: PreparedDataset) -> LightGCN:
        train = dataset.table("train")
        self.set_graph(train.column("user_id").to_numpy(), train.column("item_id").to_numpy())
        return self

    def train(self, mode: bool = True):
        self._final = None
        return super().train(mode)

    def final_embeddings(self) -> torch.Tensor:
        if self.adj is None:
            raise RuntimeError(f"{self.name} has no graph: call fit() or set_graph() first")
        if self.training:
            return self.propagation(self.embedding, self.adj, skip_ego=self.skip_ego)
        if self._final is None:
            with torch.no_grad():
                self._final = self.propagation(self.embedding, self.adj, skip_ego=self.skip_ego)
        return self._final

    def embedding_parameters(self) -> list[torch.nn.Parameter]:
        return [self.embedding]

    def user_embeddings(self) -> torch.Tensor:
        """Every user's propagated representation (spectral signatures read it)."""
        with torch.no_grad():
            return self.final_embeddings()[: self.n_users].detach()

    def score(self, users: torch.Tensor) -> torch.Tensor:
        final = self.final_embeddings()
        return final[users] @ final[self.n_users :].T

    def ranking_negatives(self, neg: torch.Tensor) -> torch.Tensor:
        """The batch's negatives: the stream's, ``[1, shared_negatives]`` items shared by every row, or
        ``[B, dns_candidates]`` DNS candidates (the stream's negative first)."""
        if self.config.shared_negatives:
            return torch.randint(0, self.n_items, (1, self.config.shared_negatives), generator=self._sample_gen).to(
                neg.device
            )
        if self.config.dns_candidates > 1:
            draws = torch.randint(
                0, self.n_items, (len(neg), self.config.dns_candidates - 1), generator=self._sample_gen
            ).to(neg.device)
            return torch.cat([neg[:, None], draws], dim=1)
        return neg

    def batch_triples(self, users, pos, neg):
        """The negatives the ranking loss uses (DNS: the picked ones) and the final embeddings ``u, i, j``
        of the batch; the last layer is computed on the batch's rows only."""
        neg = self.ranking_negatives(neg)
        nodes = torch.cat([users, pos + self.n_users, neg.reshape(-1) + self.n_users])
        unique, inverse = torch.unique(nodes, return_inverse=True)
        rows = self.propagation.rows(self.embedding, self.adj, unique, skip_ego=self.skip_ego)
        b = len(users)
        if self.config.dns_candidates > 1:
            candidates = inverse[2 * b :].reshape(neg.shape)
            pick = self.hardest_negatives(users, neg, rows.detach()[inverse[:b]], rows.detach()[candidates])[:, None]
            neg = neg.gather(1, pick)[:, 0]
            inverse = torch.cat(
                [inverse[: 2 * b], candidates.gather(1, pick)[:, 0]]
            )  # gradients reach the picked rows only
        e = take_rows(rows, inverse)
        return neg, e[:b], e[b : 2 * b], e[2 * b :].reshape(*neg.shape, -1)

    def hardest_negatives(self, users, candidates, u, j) -> torch.Tensor:
        """DNS's pick (Zhang et al. 2013, sec. 3): for each row, the index of the candidate (of
        ``candidates [B, n]``, embeddings ``j [B, n, d]``) that scores highest for the user (``u [B, d]``)
        and is not a training item of the user."""
        seen = contains(self._positive_keys, users[:, None] * self.n_items + candidates)
        scores = torch.einsum("bd,bnd->bn", u, j).masked_fill(seen, float("-inf"))
        return scores.argmax(1)

    def rec_loss(self, users, pos, neg, u, i, j) -> torch.Tensor:
        """The ranking loss of the batch's final embeddings plus L2 on its ego embeddings."""
        ego = self.embedding
        reg = l2_reg(take_rows(ego, users), take_rows(ego, pos + self.n_users), take_rows(ego, neg + self.n_users))
        if self.config.rec_loss == "ssm":
            hits = (
                neg == pos[:, None] if self.config.shared_negatives else None
            )  # the stream's negatives exclude positives
            return sampled_softmax_loss(u, i, j, self.config.ssm_temp, hits) + self.config.reg * reg
        return bpr_loss(*pair_scores(u, i, j)) + self.config.reg * reg

    def loss(self, users, pos, neg) -> torch.Tensor:
        return self.rec_loss(users, pos, *self.batch_triples(users, pos, neg))

    def view_contrast(self, users, pos, view1, view2, temperature: float, max_nodes: int = 0) -> torch.Tensor:
        """InfoNCE between two views over the batch's distinct users plus InfoNCE over its distinct
        positive items (SGL eq. 10-11, SimGCL eq. 7); ``view(nodes)`` gives a view's embeddings of nodes.
        ``max_nodes`` > 0: at most that many users and as many items, drawn at random (the InfoNCE is
        quadratic in them; a large batch holds nearly every ML-1M user)."""
        batch_users = self._at_most(torch.unique(users), max_nodes)
        nodes = torch.cat([batch_users, self._at_most(torch.unique(pos), max_nodes) + self.n_users])
        z1, z2 = view1(nodes), view2(nodes)
        n_u = len(batch_users)
        return info_nce(z1[:n_u], z2[:n_u], temperature) + info_nce(z1[n_u:], z2[n_u:], temperature)

    def _at_most(self, nodes: torch.Tensor, n: int) -> torch.Tensor:
        """``nodes``, or ``n`` of them drawn without replacement when there are more."""
        if not n or len(nodes) <= n:
            return nodes
        return nodes[torch.randperm(len(nodes), generator=self._sample_gen)[:n].to(nodes.device)]
