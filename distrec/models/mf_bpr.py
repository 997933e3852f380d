"""MF-BPR: matrix factorisation trained with Bayesian personalised ranking (Rendle et al., UAI 2009)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from distrec.models.base import set_seed
from distrec.models.indexing import take_rows
from distrec.models.losses import bpr_loss, l2_reg, pair_scores
from distrec.models.registry import register_victim
from distrec.models.trainer import PairwiseVictim, TrainConfig


@dataclass
class MFBPRConfig(TrainConfig):
    dim: int = 64
    reg: float = 1e-4


@register_victim("bpr")
class MFBPR(PairwiseVictim):
    """score(u, i) = p_u . q_i; loss = BPR-Opt + reg * (|p_u|^2 + |q_i|^2 + |q_j|^2) / 2 per example.

    Example::

        model = create_victim("bpr", data.n_users, data.n_items, epochs=50, lr=0.001)
        model.fit(data)
    """

    description = "Matrix factorisation trained with the pairwise BPR loss"
    paper = "Rendle et al., UAI 2009"

    Config = MFBPRConfig

    def __init__(self, n_users: int, n_items: int, **config):
        super().__init__(n_users, n_items, **config)
        gen = set_seed(self.config.seed)
        self.user_emb = torch.nn.Parameter(torch.randn(n_users, self.config.dim, generator=gen) * 0.1)
        self.item_emb = torch.nn.Parameter(torch.randn(n_items, self.config.dim, generator=gen) * 0.1)

    def embedding_parameters(self) -> list[torch.nn.Parameter]:
        return [self.user_emb, self.item_emb]

    def user_embedding_parameters(self) -> list[torch.nn.Parameter]:
        return [self.user_emb]

    def user_embeddings(self) -> torch.Tensor:
        """Every user's representation (spectral signatures read it)."""
        return self.user_emb.detach()

    def score(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_emb[users] @ self.item_emb.T

    def example_losses(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """The BPR loss of each example (without the regulariser), averaged over its negatives."""
        pos_scores, neg_scores = pair_scores(
            take_rows(self.user_emb, users),
            take_rows(self.item_emb, pos),
            take_rows(self.item_emb, neg.reshape(len(users), -1)),
        )
        return F.softplus(neg_scores - pos_scores[:, None]).mean(1)

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        u, i, j = take_rows(self.user_emb, users), take_rows(self.item_emb, pos), take_rows(self.item_emb, neg)
        return bpr_loss(*pair_scores(u, i, j)) + self.config.reg * l2_reg(u, i, j)
