"""Differentiable surrogates: a recommender trained on real + fake data whose trained factors are a
differentiable function of the fake data, so that an attack loss on them has a gradient w.r.t. the
fake profiles (the inner problem theta*(X) = argmin_theta L_rec(theta; D u X) of docs/methods.md section 2).

Both surrogates here minimise the WRMF objective with confidence c = 1 + alpha x and preference x
(for binary data exactly WRMF, eq. 3 of Hu et al.; for continuous fake entries the natural relaxation):

- ``gradient='als'``: trained by ALS (the WRMF victim), then the gradient flows through one more
  closed-form ALS sweep from the trained factors: the fake users' step p_j(X), the item step
  q_v(X, p_fake(X)) = A_v^-1 b_v, and the real users' step p_u(Q(X)) (RevAdv's implicit-gradient
  variant goes through the item step only; without the fake users' step fillers cannot move the
  targets' factors, and without the real users' step the gradient was not a descent direction of the
  retrained loss in our tests). The item step's backward pass is closed form (:class:`ItemStep`).
  Memory O(n_fake x n_items + interactions x factors).
- ``gradient='unroll'``: trained from scratch by full-batch Adam; the last ``unroll_steps`` steps are
  differentiated (higher-order: each step contains the loss gradient, and autograd differentiates
  through it). Dense O(n_users x n_items); each unrolled step is checkpointed, so memory holds one
  step's activations plus the factors of every step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint

from distrec.attacks.unrolled import adam_update
from distrec.data.matrix import UserItemCSR
from distrec.models.wrmf import WRMF, _Buckets, _SparseSide, conjugate_gradient, wrmf_objective


@dataclass
class SurrogateConfig:
    factors: int = 64
    alpha: float = 10.0
    reg: float = 0.01
    gradient: str = "als"
    iterations: int = 10
    cg_steps: int = 3
    solve_steps: int = 20
    epochs: int = 60
    unroll_steps: int = 10
    lr: float = 0.05
    max_dense_entries: int = 200_000_000
    seed: int = 0
    device: str | None = None


@dataclass
class Factors:
    """Real users' and all items' factors of a trained surrogate; scores are ``users @ items.T``."""

    users: torch.Tensor
    items: torch.Tensor


class WRMFSurrogate:
    """A WRMF-objective surrogate over the real users of ``train`` plus ``n_fake`` fake users."""

    Config = SurrogateConfig

    def __init__(self, train: UserItemCSR, n_fake: int, device: torch.device | str = "cpu", **config):
        self.config = SurrogateConfig(**config)
        if self.config.gradient not in ("als", "unroll"):
            raise ValueError(f"surrogate gradient must be 'als' or 'unroll', got {self.config.gradient!r}")
        self.n_fake, self.device = n_fake, torch.device(device)
        self.n_real, self.n_items = train.n_users, train.n_items
        self.real_side = _SparseSide(train, self.config.alpha, self.device)
        self.real_rows = r, c = train.rows(np.arange(self.n_real))
        if self.config.gradient == "als":
            self.real_buckets = _Buckets(train, self.config.alpha, 1 << 20, self.device)
            self.real_item_side = _SparseSide(
                UserItemCSR.from_arrays(c, r, self.n_items, self.n_real), self.config.alpha, self.device
            )
        else:
            entries = (self.n_real + n_fake) * self.n_items
            if entries > self.config.max_dense_entries:
                raise ValueError(
                    f"surrogate gradient='unroll' needs a dense {self.n_real + n_fake} x {self.n_items} matrix "
                    f"({entries:,} entries > max_dense_entries={self.config.max_dense_entries:,}); use gradient='als'"
                )
            self.real_dense = torch.zeros(self.n_real, self.n_items, device=self.device)
            self.real_dense[torch.as_tensor(r), torch.as_tensor(c)] = 1.0

    def fit(self, fake: torch.Tensor, seed: int | None = None) -> Factors:
        """Train from scratch on real + ``fake`` (binary, ``[n_fake, n_items]``, may require grad)."""
        seed = self.config.seed if seed is None else seed
        return self._fit_als(fake, seed) if self.config.gradient == "als" else self._fit_unrolled(fake, seed)

    def rec_loss(self, factors: Factors) -> torch.Tensor:
        """The recommendation loss on the real data (the WRMF objective restricted to real users)."""
        return wrmf_objective(factors.users, factors.items, self.real_side, self.config.reg)

    # -- ALS + closed-form implicit gradient -------------------------------------------------------

    def _fit_als(self, fake: torch.Tensor, seed: int) -> Factors:
        cfg = self.config
        n_all = self.n_real + self.n_fake
        fr, fc = torch.nonzero(fake.detach().cpu() > 0, as_tuple=True)
        r, c = self.real_rows
        users = np.concatenate([r, fr.numpy() + self.n_real])
        items = np.concatenate([c, fc.numpy()])
        values = np.concatenate([np.ones(len(r), np.float32), fake.detach().cpu()[fr, fc].numpy().astype(np.float32)])
        model = WRMF(
            n_all,
            self.n_items,
            factors=cfg.factors,
            iterations=cfg.iterations,
            alpha=cfg.alpha,
            reg=cfg.reg,
            cg_steps=cfg.cg_steps,
            seed=seed,
            device=str(self.device),
        )
        model.fit_matrix(
            UserItemCSR.from_arrays(users, items, n_all, self.n_items, values), progress=False, graded=True
        )
        p, q = model.user_factors.detach(), model.item_factors.detach()
        p_fake = self.fake_user_step(fake, q)
        items_x = ItemStep.apply(fake, p[: self.n_real], p_fake, q, self)
        return Factors(self.real_user_step(items_x), items_x)

    def real_user_step(self, q: torch.Tensor) -> torch.Tensor:
        """The real users' closed-form ALS step given item factors ``q`` (Hu et al. eq. 4), exactly,
        batched over degree buckets, differentiable in ``q``."""
        gram = q.T @ q + self.config.reg * torch.eye(q.shape[1], device=q.device)
        rows, sols = [], []
        for block_rows, idx, w, valid in self.real_buckets.blocks:
            qb = q[idx]  # [B, D, f]
            lhs = gram + torch.bmm(qb.transpose(1, 2) * w.unsqueeze(1), qb)
            rhs = torch.bmm(((1.0 + w) * valid).unsqueeze(1), qb).squeeze(1)
            sols.append(torch.cholesky_solve(rhs.unsqueeze(-1), torch.linalg.cholesky(lhs)).squeeze(-1))
            rows.append(block_rows)
        out = torch.zeros(self.n_real, q.shape[1], device=q.device, dtype=q.dtype)
        return out.index_copy(0, torch.cat(rows), torch.cat(sols)) if rows else out

    def fake_user_step(self, fake: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """The fake users' closed-form ALS step (Hu et al. eq. 4) given item factors ``q``, exactly, as a
        differentiable function of ``fake``: p_j = (Q^T Q + reg I + alpha sum_v x_jv q_v q_v^T)^-1
        sum_v (1 + alpha x_jv) x_jv q_v."""
        a = self.config.alpha
        gram = q.T @ q + self.config.reg * torch.eye(q.shape[1], device=q.device)
        f = q.shape[1]
        outer = (q[:, :, None] * q[:, None, :]).reshape(len(q), f * f)  # q_v q_v^T per item: O(items x factors^2)
        lhs = gram + a * (fake @ outer).reshape(len(fake), f, f)
        rhs = ((1.0 + a * fake) * fake) @ q
        return torch.linalg.solve(lhs, rhs.unsqueeze(-1)).squeeze(-1)

    def item_system(self, p_real: torch.Tensor, p_fake: torch.Tensor, fake: torch.Tensor):
        """``matvec(V)`` of the item-step normal equations A_v v = (P^T P + reg I) v + alpha sum_u x_uv
        (p_u . v) p_u, and the right-hand side b_v = sum_u (1 + alpha x_uv) x_uv p_u."""
        a = self.config.alpha
        p_all = torch.cat([p_real, p_fake])
        gram = p_all.T @ p_all + self.config.reg * torch.eye(p_all.shape[1], device=p_all.device)

        def matvec(v):
            return (
                v @ gram + self.real_item_side.weighted_gram_matvec(v, p_real) + a * (fake.T * (v @ p_fake.T)) @ p_fake
            )

        b = torch.sparse.mm(self.real_item_side.confidence, p_real) + ((1.0 + a * fake) * fake).T @ p_fake
        return matvec, b

    # -- unrolled full-batch Adam -------------------------------------------------------------------

    def _fit_unrolled(self, fake: torch.Tensor, seed: int) -> Factors:
        cfg = self.config
        gen = torch.Generator().manual_seed(seed)
        p = (torch.randn(self.n_real + self.n_fake, cfg.factors, generator=gen) * 0.1).to(self.device)
        q = (torch.randn(self.n_items, cfg.factors, generator=gen) * 0.1).to(self.device)
        state = (p, q, torch.zeros_like(p), torch.zeros_like(q), torch.zeros_like(p), torch.zeros_like(q))
        frozen = cfg.epochs - cfg.unroll_steps
        if frozen < 0:
            raise ValueError(f"surrogate unroll_steps ({cfg.unroll_steps}) exceeds epochs ({cfg.epochs})")
        with torch.no_grad():
            data = torch.cat([self.real_dense, fake.detach()])
            for t in range(1, frozen + 1):
                state = self.adam_step(data, t, *state)
        data = torch.cat([self.real_dense, fake])
        for t in range(frozen + 1, cfg.epochs + 1):
            state = checkpoint(self.adam_step, data, t, *state, use_reentrant=False)
        return Factors(state[0][: self.n_real], state[1])

    def adam_step(self, data, t, p, q, mp, mq, vp, vq):
        """One full-batch Adam step on the WRMF objective, differentiable (:func:`adam_update`)."""
        gp, gq = wmf_gradients(p, q, data, self.config.alpha, self.config.reg)
        (p, q), (mp, mq), (vp, vq) = adam_update([p, q], [gp, gq], [mp, mq], [vp, vq], t, self.config.lr)
        return p, q, mp, mq, vp, vq


def wmf_gradients(
    p: torch.Tensor, q: torch.Tensor, data: torch.Tensor, alpha: float, reg: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form gradients of sum c (x - p.q)^2 + reg (|P|^2 + |Q|^2), c = 1 + alpha x, w.r.t. P and Q."""
    resid = (1.0 + alpha * data) * (p @ q.T - data)
    return 2.0 * (resid @ q + reg * p), 2.0 * (resid.T @ p + reg * q)


class ItemStep(torch.autograd.Function):
    """q_v(X) = A_v(X)^-1 b_v(X) for every item v, with the user factors fixed (one closed-form ALS
    item step, Hu et al. eq. 4; RevAdv's implicit-gradient variant), solved by conjugate gradient.

    Backward, for fake user j: with u_v = A_v^-1 dL/dq_v (A_v is symmetric), dL/db_v = u_v and
    dL/dA_v = -u_v q_v^T; db_v/dx_jv = (1 + 2 alpha x_jv) p_j and dA_v/dx_jv = alpha p_j p_j^T, so
    dL/dx_jv = (p_j . u_v)(1 + 2 alpha x_jv) - alpha (p_j . u_v)(p_j . q_v). A_v holds c_jv p_j p_j^T
    and b_v holds c_jv x_jv p_j (c = 1 + alpha x), so
    dL/dp_j = sum_v c_jv [x_jv u_v - (q_v . p_j) u_v - (u_v . p_j) q_v]."""

    @staticmethod
    def forward(ctx, fake, p_real, p_fake, warm, surrogate):
        matvec, b = surrogate.item_system(p_real, p_fake, fake)
        q = conjugate_gradient(matvec, b, warm.clone(), surrogate.config.solve_steps)
        ctx.save_for_backward(fake, p_fake, q)
        ctx.surrogate, ctx.matvec = surrogate, matvec  # A_v is reused by the backward solve
        return q

    @staticmethod
    def backward(ctx, grad_q):
        fake, p_fake, q = ctx.saved_tensors
        surrogate = ctx.surrogate
        u = conjugate_gradient(ctx.matvec, grad_q, torch.zeros_like(grad_q), surrogate.config.solve_steps)
        pu = p_fake @ u.T  # [n_fake, n_items]
        a = surrogate.config.alpha
        pq = p_fake @ q.T
        conf = 1.0 + a * fake
        grad_fake = pu * (1.0 + 2.0 * a * fake) - a * pu * pq
        grad_p_fake = (conf * (fake - pq)) @ u - (conf * pu) @ q
        return grad_fake, None, grad_p_fake, None, None
