"""Differentiable pairwise surrogates of other architectures than WRMF: MF-BPR and LightGCN, so that
SharpAP's population can hold structurally different surrogates (docs/methods.md section 2).

theta*(X) is approximated by unrolled optimisation: the surrogate is trained from scratch by Adam on
the BPR loss (Rendle et al. 2009, eq. 6) over real pairs plus the fake entries weighted by the
continuous fake matrix X, and the last ``unroll_steps`` Adam steps are differentiated (higher-order:
each step holds the loss gradient, and autograd goes through it; :func:`adam_update`). Earlier steps
are treated as constant, as in RevAdv's unrolled variant. Every random draw (batches, negatives)
comes from the fit's seed, so the same X and seed retrain the same surrogate.

The fake part of the loss is sum_{j,v} x_jv mean_k softplus(s_j,n_k - s_jv) over every item v, with
``fake_negatives`` negatives n_k per fake user and step; an entry with x_jv = 0 adds nothing to the
loss but keeps its gradient, so every filler item is scored. LightGCN (He et al. 2020, eq. 4) smooths
the embeddings over the user-item graph in which a fake entry is an edge of weight x_jv (PyG's
``LGConv``, symmetric normalisation over the weighted degrees), so X also moves the graph itself."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch_geometric.nn import LGConv

from distrec.attacks.surrogates import Factors
from distrec.attacks.unrolled import adam_update
from distrec.data.matrix import UserItemCSR


@dataclass
class BPRSurrogateConfig:
    """``steps`` Adam steps from scratch, each on ``batch_size`` real pairs and every fake entry; the
    last ``unroll_steps`` differentiated; ``reg``: L2 on all embeddings (mean squared norm)."""

    dim: int = 64
    steps: int = 300
    unroll_steps: int = 5
    batch_size: int = 16384
    lr: float = 0.01
    reg: float = 1e-4
    fake_negatives: int = 16
    rec_pairs: int = 65536
    seed: int = 0
    device: str | None = None


@dataclass
class LightGCNSurrogateConfig(BPRSurrogateConfig):
    """``max_fake_edges``: every (fake user, item) pair is an edge (n_fake x n_items of them, each with a
    ``dim``-wide message per layer); above this the surrogate refuses rather than exhausting memory."""

    layers: int = 2
    max_fake_edges: int = 5_000_000


class BPRSurrogate:
    """MF-BPR over the real users of ``train`` plus ``n_fake`` fake users; scores are ``users @ items.T``."""

    Config = BPRSurrogateConfig

    def __init__(self, train: UserItemCSR, n_fake: int, device: torch.device | str = "cpu", **config):
        self.config = self.Config(**config)
        cfg = self.config
        if not 0 < cfg.unroll_steps <= cfg.steps:
            raise ValueError(f"surrogate unroll_steps must be in 1..steps ({cfg.steps}), got {cfg.unroll_steps}")
        self.n_real, self.n_fake, self.n_items, self.device = train.n_users, n_fake, train.n_items, torch.device(device)
        r, c = train.rows(np.arange(self.n_real))
        self.real_users, self.real_items = (
            torch.as_tensor(r, device=self.device),
            torch.as_tensor(c, device=self.device),
        )
        gen = torch.Generator().manual_seed(cfg.seed)
        pick = torch.randint(len(r), (min(cfg.rec_pairs, len(r)),), generator=gen)
        self.rec_sample = (
            self.real_users[pick],
            self.real_items[pick],
            torch.randint(self.n_items, (len(pick),), generator=gen).to(self.device),
        )

    # -- the encoder: MF here, LightGCN in the subclass --------------------------------------------
    def encode(self, users: torch.Tensor, items: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Final user embeddings (real then fake) and item embeddings."""
        return users, items

    def fit(self, fake: torch.Tensor, seed: int | None = None) -> Factors:
        """Train from scratch on real + ``fake`` (``[n_fake, n_items]``, may require grad)."""
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.seed if seed is None else seed)
        users = (torch.randn(self.n_real + self.n_fake, cfg.dim, generator=gen) * 0.1).to(self.device).requires_grad_()
        items = (torch.randn(self.n_items, cfg.dim, generator=gen) * 0.1).to(self.device).requires_grad_()
        opt = torch.optim.Adam([users, items], lr=cfg.lr)
        frozen = cfg.steps - cfg.unroll_steps
        for _ in range(frozen):
            opt.zero_grad()
            self.train_loss(users, items, fake.detach(), gen).backward()
            opt.step()
        state = [opt.state[p] for p in (users, items)] if frozen else None
        m = [s["exp_avg"] for s in state] if state else [torch.zeros_like(users), torch.zeros_like(items)]
        v = [s["exp_avg_sq"] for s in state] if state else [torch.zeros_like(users), torch.zeros_like(items)]
        params = [users.detach().requires_grad_(), items.detach().requires_grad_()]
        with torch.enable_grad():
            for t in range(frozen + 1, cfg.steps + 1):
                loss = self.train_loss(*params, fake, gen)
                grads = torch.autograd.grad(loss, params, create_graph=fake.requires_grad)
                params, m, v = adam_update(params, list(grads), m, v, t, cfg.lr)
        final_users, final_items = self.encode(*params, fake)
        return Factors(final_users[: self.n_real], final_items)

    def train_loss(
        self, users: torch.Tensor, items: torch.Tensor, fake: torch.Tensor, gen: torch.Generator
    ) -> torch.Tensor:
        """BPR over a batch of real pairs (scaled to the whole real data) plus every fake entry weighted
        by ``fake``, divided by the total weight; plus the L2 term."""
        cfg = self.config
        n_pairs = len(self.real_users)
        pick = torch.randint(n_pairs, (min(cfg.batch_size, n_pairs),), generator=gen).to(self.device)
        neg = torch.randint(self.n_items, (len(pick),), generator=gen).to(self.device)
        fake_neg = torch.randint(self.n_items, (self.n_fake, cfg.fake_negatives), generator=gen).to(self.device)
        u_all, i_all = self.encode(users, items, fake)
        u, pos = self.real_users[pick], self.real_items[pick]
        real = F.softplus((u_all[u] * (i_all[neg] - i_all[pos])).sum(-1)).sum() * (n_pairs / len(pick))
        s_fake = u_all[self.n_real :] @ i_all.T  # [n_fake, n_items]
        margin = s_fake.gather(1, fake_neg)[:, None, :] - s_fake[:, :, None]
        fake_loss = (fake * F.softplus(margin).mean(-1)).sum()
        l2 = cfg.reg * (users.pow(2).sum() + items.pow(2).sum()) / (len(users) + len(items))
        return (real + fake_loss) / (n_pairs + float(fake.detach().sum())) + l2

    def rec_loss(self, factors: Factors) -> torch.Tensor:
        """BPR on a fixed sample of real pairs, scored by ``factors`` (SharpAP's constraint)."""
        u, pos, neg = self.rec_sample
        return F.softplus((factors.users[u] * (factors.items[neg] - factors.items[pos])).sum(-1)).mean()


class LightGCNSurrogate(BPRSurrogate):
    """LightGCN's propagation over the real edges plus the fake entries as edges of weight x_jv."""

    Config = LightGCNSurrogateConfig

    def __init__(self, train: UserItemCSR, n_fake: int, device: torch.device | str = "cpu", **config):
        super().__init__(train, n_fake, device, **config)
        if n_fake * self.n_items > self.config.max_fake_edges:
            raise ValueError(
                f"lightgcn surrogate: {n_fake} fake users x {self.n_items} items = {n_fake * self.n_items:,} fake "
                "edges "
                f"> max_fake_edges={self.config.max_fake_edges:,}; use fewer fake users, a larger max_fake_edges on a "
                "machine with the memory, or the wrmf surrogate"
            )
        self.conv = LGConv(normalize=True)
        n_users = self.n_real + n_fake
        fu = torch.arange(n_fake, device=self.device).repeat_interleave(self.n_items) + self.n_real
        fi = torch.arange(self.n_items, device=self.device).repeat(n_fake)
        users = torch.cat([self.real_users, fu])
        items = torch.cat([self.real_items, fi]) + n_users
        self.edge_index = torch.stack([torch.cat([users, items]), torch.cat([items, users])])
        self.n_real_edges = len(self.real_users)

    def encode(self, users: torch.Tensor, items: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = torch.cat([torch.ones(self.n_real_edges, device=self.device), fake.reshape(-1)])
        weight = torch.cat([w, w])
        h = torch.cat([users, items])
        layers = [h]
        for _ in range(self.config.layers):
            h = self.conv(h, self.edge_index, weight)
            layers.append(h)
        final = torch.stack(layers).mean(0)
        return final[: len(users)], final[len(users) :]
