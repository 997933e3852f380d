"""MF-BPR: matrix factorisation trained with Bayesian personalised ranking (Rendle et al., UAI 2009)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from distrec.data.dataset import PreparedDataset
from distrec.data.matrix import UserItemCSR
from distrec.data.streaming import InteractionStream
from distrec.evaluation.ranking import full_ranking_metrics
from distrec.models.base import Victim, pick_device, set_seed
from distrec.models.registry import register_victim


@dataclass
class MFBPRConfig:
    dim: int = 64
    epochs: int = 50
    lr: float = 1e-3
    batch_size: int = 2048
    reg: float = 1e-4
    seed: int = 0
    eval_every: int = 5
    patience: int = 3
    backend: str = "auto"
    device: str | None = None


@register_victim("bpr")
class MFBPR(Victim):
    """score(u, i) = p_u . q_i; loss (BPR-Opt, eq. 6 of the paper, minimised):
    -sum ln sigmoid(x_ui - x_uj) + reg/2 (|p_u|^2 + |q_i|^2 + |q_j|^2), averaged over the batch."""

    Config = MFBPRConfig

    def __init__(self, n_users: int, n_items: int, **config):
        super().__init__(n_users, n_items, **config)
        gen = set_seed(self.config.seed)
        self.user_emb = torch.nn.Parameter(torch.randn(n_users, self.config.dim, generator=gen) * 0.1)
        self.item_emb = torch.nn.Parameter(torch.randn(n_items, self.config.dim, generator=gen) * 0.1)

    def score(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_emb[users] @ self.item_emb.T

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        u, i, j = self.user_emb[users], self.item_emb[pos], self.item_emb[neg]
        x_uij = (u * i).sum(-1) - (u * j).sum(-1)
        reg = 0.5 * (u.pow(2).sum(-1) + i.pow(2).sum(-1) + j.pow(2).sum(-1))
        return (-F.logsigmoid(x_uij) + self.config.reg * reg).mean()

    def fit(self, dataset: PreparedDataset, valid_split: str | None = None, progress: bool = True) -> list[dict]:
        """Train on the ``train`` split streamed by :class:`InteractionStream`; with ``valid_split``, stop
        early when Recall@20 on it has not improved for ``patience`` evaluations and keep the best weights."""
        cfg = self.config
        device = pick_device(cfg.device)
        self.to(device)
        stream = InteractionStream(dataset, "train", batch_size=cfg.batch_size, seed=cfg.seed, backend=cfg.backend)
        opt = torch.optim.Adam(self.parameters(), lr=cfg.lr)
        train_csr = valid_csr = None
        if valid_split:
            train_csr = UserItemCSR.from_table(dataset.table("train"), self.n_users, self.n_items)
            valid_csr = UserItemCSR.from_table(dataset.table(valid_split), self.n_users, self.n_items)
        history, best, best_state, bad_evals = [], -1.0, None, 0
        bar = tqdm(range(cfg.epochs), desc=f"{self.name} fit", disable=not progress, unit="epoch")
        for epoch in bar:
            total, n = 0.0, 0
            for batch in stream.epoch(epoch):
                loss = self.loss(batch["user_id"].to(device), batch["item_id"].to(device), batch["neg_item"][:, 0].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(batch["user_id"])
                n += len(batch["user_id"])
            record = {"epoch": epoch, "loss": total / max(n, 1)}
            if valid_csr is not None and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
                record.update({f"valid_{k}": v for k, v in full_ranking_metrics(self.score, train_csr, valid_csr, (20,), device=device).items()})
                if record["valid_recall@20"] > best:
                    best, bad_evals = record["valid_recall@20"], 0
                    best_state = {k: v.detach().clone() for k, v in self.state_dict().items()}
                else:
                    bad_evals += 1
            history.append(record)
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            if valid_csr is not None and bad_evals >= cfg.patience:
                break
        if best_state is not None:
            self.load_state_dict(best_state)
        return history
