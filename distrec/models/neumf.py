"""NeuMF (He et al., WWW 2017): generalised matrix factorisation and an MLP, fused in one output layer."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from distrec.config import NonNegativeInt, UnitInterval
from distrec.data.dataset import PreparedDataset
from distrec.models.base import set_seed
from distrec.models.registry import register_victim
from distrec.models.trainer import PairwiseVictim, TrainConfig


@dataclass
class NeuMFConfig(TrainConfig):
    """``branch``: ``neumf`` (both), or NCF's ``gmf`` or ``mlp`` alone (each with its own output layer);
    ``pretrain_epochs`` > 0: NCF's pre-training (section 3.4.1), GMF and MLP trained alone for that many epochs,
    then NeuMF started from their weights with the output layer [alpha h_GMF ; (1 - alpha) h_MLP],
    alpha = ``pretrain_alpha``."""

    dim: int = 32
    mlp_layers: list[int] = field(default_factory=lambda: [64, 32, 16])
    num_negatives: int = 4
    reg: float = 0.0
    score_chunk_items: int = 4096
    branch: Literal["neumf", "gmf", "mlp"] = "neumf"
    pretrain_epochs: NonNegativeInt = 0
    pretrain_alpha: UnitInterval = 0.5


@register_victim("neumf")
class NeuMF(PairwiseVictim):
    """y_ui = sigmoid(h^T [p_u^G * q_i^G ; MLP([p_u^M ; q_i^M])]) (eq. 12), trained with the pointwise log
    loss over each positive and ``num_negatives`` sampled negatives (eq. 7). Scoring every item runs the
    MLP on every (user, item) pair, in item chunks of ``score_chunk_items``.

    Example::

        model = create_victim("neumf", data.n_users, data.n_items, epochs=50, lr=0.001)
        model.fit(data)
    """

    description = "Neural matrix factorisation: a GMF and an MLP tower fused"
    paper = "He et al., WWW 2017"

    Config = NeuMFConfig

    def __init__(self, n_users: int, n_items: int, **config):
        super().__init__(n_users, n_items, **config)
        cfg = self.config
        gen = set_seed(cfg.seed)
        self.user_gmf = torch.nn.Parameter(torch.randn(n_users, cfg.dim, generator=gen) * 0.01)
        self.item_gmf = torch.nn.Parameter(torch.randn(n_items, cfg.dim, generator=gen) * 0.01)
        half = cfg.mlp_layers[0] // 2
        self.user_mlp = torch.nn.Parameter(torch.randn(n_users, half, generator=gen) * 0.01)
        self.item_mlp = torch.nn.Parameter(torch.randn(n_items, half, generator=gen) * 0.01)
        layers = []
        for a, b in zip(cfg.mlp_layers[:-1], cfg.mlp_layers[1:]):
            layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
        self.mlp = torch.nn.Sequential(*layers)
        width = {"neumf": cfg.dim + cfg.mlp_layers[-1], "gmf": cfg.dim, "mlp": cfg.mlp_layers[-1]}[cfg.branch]
        self.out = torch.nn.Linear(width, 1)
        if cfg.pretrain_epochs and cfg.branch != "neumf":
            raise ValueError(f"neumf: pretrain_epochs pre-trains the two branches of NeuMF, not branch {cfg.branch!r}")

    def _used(self, names: tuple[str, ...]) -> list[str]:
        """The names of ``names`` the configured branch scores with."""
        branch = self.config.branch
        return [n for n in names if branch == "neumf" or n.endswith(branch)]

    def embedding_parameters(self) -> list[torch.nn.Parameter]:
        return [getattr(self, n) for n in self._used(("user_gmf", "item_gmf", "user_mlp", "item_mlp"))]

    def user_embedding_parameters(self) -> list[torch.nn.Parameter]:
        return [getattr(self, n) for n in self._used(("user_gmf", "user_mlp"))]

    def hidden_layers(self) -> list[torch.nn.Module]:
        """The MLP's linear layers (RAT perturbs their outputs); none for the GMF branch alone."""
        return [] if self.config.branch == "gmf" else [m for m in self.mlp if isinstance(m, torch.nn.Linear)]

    def weight_matrices(self) -> list[tuple[str, torch.nn.Parameter, int]]:
        """(name, matrix, axis of a row): the embedding tables (a row per user or item) and every layer the
        configured branch scores with."""
        layers = [(n, getattr(self, n), 1) for n in self._used(("user_gmf", "item_gmf", "user_mlp", "item_mlp"))]
        if self.config.branch != "gmf":
            layers += [(f"mlp.{i}", m.weight, 1) for i, m in enumerate(self.mlp) if isinstance(m, torch.nn.Linear)]
        return layers + [("out", self.out.weight, 1)]

    def logits(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid scores of aligned ``users`` and ``items`` (any matching shapes)."""
        parts = []
        if self.config.branch != "mlp":
            parts.append(self.user_gmf[users] * self.item_gmf[items])
        if self.config.branch != "gmf":
            parts.append(self.mlp(torch.cat([self.user_mlp[users], self.item_mlp[items]], -1)))
        return self.out(torch.cat(parts, -1)).squeeze(-1)

    def fit(self, dataset: PreparedDataset, valid_split: str | None = None, progress: bool = True, on_epoch=None):
        history = self.pretrain(dataset, progress) if self.config.pretrain_epochs else []
        return history + super().fit(dataset, valid_split, progress, on_epoch)

    def pretrain(self, dataset: PreparedDataset, progress: bool = True) -> list[dict]:
        """NCF's pre-training: GMF and MLP fit alone, then this model's weights from theirs. NCF then trains
        NeuMF with plain SGD; distrec keeps the configured schedule (Adam at ``lr``)."""
        cfg = dict(asdict(self.config), epochs=self.config.pretrain_epochs, pretrain_epochs=0)
        history, parts = [], {}
        for branch in ("gmf", "mlp"):
            parts[branch] = NeuMF(self.n_users, self.n_items, **dict(cfg, branch=branch))
            history += [dict(h, stage=f"pretrain {branch}") for h in parts[branch].fit(dataset, progress=progress)]
        a = self.config.pretrain_alpha
        gmf, mlp = parts["gmf"].cpu(), parts["mlp"].cpu()
        with torch.no_grad():
            for name in ("user_gmf", "item_gmf"):
                getattr(self, name).copy_(getattr(gmf, name))
            for name in ("user_mlp", "item_mlp"):
                getattr(self, name).copy_(getattr(mlp, name))
            self.mlp.load_state_dict(mlp.mlp.state_dict())
            self.out.weight.copy_(torch.cat([a * gmf.out.weight, (1 - a) * mlp.out.weight], 1))
            self.out.bias.copy_(a * gmf.out.bias + (1 - a) * mlp.out.bias)
        return history

    def score_pairs(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.logits(users[:, None].expand_as(items), items)

    def score(self, users: torch.Tensor) -> torch.Tensor:
        chunks = []
        for s in range(0, self.n_items, self.config.score_chunk_items):
            items = torch.arange(s, min(s + self.config.score_chunk_items, self.n_items), device=users.device)
            chunks.append(self.logits(users[:, None].expand(-1, len(items)), items[None, :].expand(len(users), -1)))
        return torch.cat(chunks, 1)

    def example_losses(self, users, pos, neg) -> torch.Tensor:
        """The log loss of each positive and its negatives, averaged per example (without ``reg``)."""
        neg = neg.reshape(len(users), -1)
        logits = torch.cat([self.logits(users, pos)[:, None], self.logits(users[:, None].expand_as(neg), neg)], 1)
        labels = torch.zeros_like(logits)
        labels[:, 0] = 1
        return F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(1)

    def loss(self, users, pos, neg) -> torch.Tensor:
        neg = neg.reshape(len(users), -1)
        pos_logit = self.logits(users, pos)
        neg_logit = self.logits(users[:, None].expand_as(neg), neg)
        loss = F.binary_cross_entropy_with_logits(pos_logit, torch.ones_like(pos_logit), reduction="sum")
        loss = (loss + F.binary_cross_entropy_with_logits(neg_logit, torch.zeros_like(neg_logit), reduction="sum")) / (
            pos_logit.numel() + neg_logit.numel()
        )
        if self.config.reg:
            loss = loss + self.config.reg * sum(
                p.pow(2).sum() for p in (self.user_gmf[users], self.user_mlp[users])
            ) / len(users)
        return loss
