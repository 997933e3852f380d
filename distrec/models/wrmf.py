"""WRMF / weighted ALS (Hu, Koren, Volinsky, ICDM 2008) for implicit feedback."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from distrec.data.dataset import PreparedDataset
from distrec.data.matrix import UserItemCSR
from distrec.models.base import Victim, pick_device, set_seed
from distrec.models.registry import register_victim
from distrec.models.trainer import EarlyStopping

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


@dataclass
class WRMFConfig:
    factors: int = 64
    iterations: int = 15
    alpha: float = 10.0
    reg: float = 0.01
    solver: str = "cg"
    cg_steps: int = 3
    bucket_entries: int = 1 << 20
    seed: int = 0
    eval_every: int = 5
    patience: int = 2
    device: str | None = None


class _Buckets:
    """Rows of a CSR grouped by degree into padded blocks ``[B, D]`` (item ids, confidence weights),
    each block at most ``bucket_entries`` entries, so that the normal equations are batched matmuls."""

    def __init__(self, csr: UserItemCSR, alpha: float, max_entries: int, device):
        deg = csr.degrees()
        order = np.argsort(deg, kind="stable")
        order = order[deg[order] > 0]
        sorted_deg = deg[order]
        self.empty = torch.as_tensor(np.flatnonzero(deg == 0), device=device)
        self.blocks = []
        start = 0
        while start < len(order):
            # the largest block [start, end) with (end - start) * max degree <= max_entries
            lo, hi = start + 1, len(order)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if (mid - start) * sorted_deg[mid - 1] <= max_entries else (lo, mid - 1)
            rows = order[start:lo]
            r, c = csr.rows(rows)
            pos = np.arange(len(r)) - np.repeat(np.cumsum(deg[rows]) - deg[rows], deg[rows])
            flat = np.repeat(csr.indptr[rows], deg[rows]) + pos
            idx = np.zeros((len(rows), int(sorted_deg[lo - 1])), np.int64)
            w = np.zeros(idx.shape, np.float32)
            valid = np.zeros(idx.shape, np.float32)
            idx[r, pos] = c
            w[r, pos] = alpha * (csr.values[flat] if csr.values is not None else 1.0)
            valid[r, pos] = 1.0
            self.blocks.append(tuple(torch.as_tensor(a, device=device) for a in (rows, idx, w, valid)))
            start = lo


class _SparseSide:
    """One side of the problem as CSR tensors for the CG solver: the sparsity pattern, the weights
    w = alpha r and ``confidence`` = c p with c = 1 + w, aligned with the pattern's entries. The
    preference p is 1 for every observed pair (Hu et al.), or r itself when ``graded`` (the continuous
    relaxation attack surrogates differentiate; identical for binary data)."""

    def __init__(self, csr: UserItemCSR, alpha: float, device, graded: bool = False):
        self.crow = torch.as_tensor(csr.indptr, device=device)
        self.col = torch.as_tensor(csr.indices, device=device)
        self.shape = (csr.n_users, csr.n_items)
        values = csr.values if csr.values is not None else np.ones(len(csr.indices), np.float32)
        self.weights = torch.as_tensor(alpha * values, dtype=torch.float32, device=device)
        self.pattern = self.with_values(torch.ones_like(self.weights))
        pref = torch.as_tensor(values, dtype=torch.float32, device=device) if graded else 1.0
        self.confidence = self.with_values((1.0 + self.weights) * pref)
        self.empty = torch.as_tensor(np.flatnonzero(csr.degrees() == 0), device=device)

    def with_values(self, values: torch.Tensor) -> torch.Tensor:
        return torch.sparse_csr_tensor(self.crow, self.col, values, size=self.shape)

    def weighted_gram_matvec(self, v: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        """Row u of the result is sum_i w_ui (y_i . v_u) y_i (``fixed`` = Y)."""
        dots = torch.sparse.sampled_addmm(self.pattern, v, fixed.T, beta=0.0).values()
        return torch.sparse.mm(self.with_values(self.weights * dots), fixed)


def conjugate_gradient(
    matvec, b: torch.Tensor, x: torch.Tensor, steps: int, frozen: torch.Tensor | None = None
) -> torch.Tensor:
    """``steps`` conjugate-gradient iterations for the batched SPD systems A x_r = b_r (one per row),
    from ``x``; rows in ``frozen`` keep their start value."""
    r = b - matvec(x)
    if frozen is not None:
        r[frozen] = 0.0
    p = r.clone()
    rs = (r * r).sum(1, keepdim=True)
    for _ in range(steps):
        ap = matvec(p)
        step = rs / (p * ap).sum(1, keepdim=True).clamp_min(1e-20)
        x = x + step * p
        r = r - step * ap
        rs_new = (r * r).sum(1, keepdim=True)
        p = r + (rs_new / rs.clamp_min(1e-20)) * p
        rs = rs_new
    return x


def wrmf_objective(x: torch.Tensor, y: torch.Tensor, side: _SparseSide, reg: float) -> torch.Tensor:
    """The WRMF loss (eq. 3) sum_{u,i} c_ui (p_ui - x_u.y_i)^2 + reg (|X|^2 + |Y|^2), computed as
    tr(X^T X Y^T Y) + sum_obs [c (1 - s)^2 - s^2] + reg (...), with s = x_u . y_i over the observed
    pairs (an SDDMM), in float64; differentiable in ``x`` and ``y``."""
    s = torch.sparse.sampled_addmm(side.pattern, x, y.T, beta=0.0).values().double()
    c = 1.0 + side.weights.double()
    dense = torch.trace((x.T @ x).double() @ (y.T @ y).double())
    return dense + (c * (1 - s) ** 2 - s**2).sum() + reg * (x.double().pow(2).sum() + y.double().pow(2).sum())


@register_victim("wrmf")
class WRMF(Victim):
    """Minimises sum_{u,i} c_ui (p_ui - x_u.y_i)^2 + reg (|X|^2 + |Y|^2), c_ui = 1 + alpha r_ui,
    p_ui = 1 for observed pairs (eq. 3), alternating the closed-form solves (eq. 4):
    x_u = (Y^T Y + reg I + Y^T (C^u - I) Y)^-1 Y^T C^u p(u), batched over degree buckets.
    ``solver='cholesky'`` solves exactly; ``solver='cg'`` takes ``cg_steps`` conjugate-gradient steps
    warm-started from the previous factors (the approximation of Takacs et al. 2011 used by ``implicit``).
    r_ui is the interaction's ``rating`` (1 for implicit data).

    Example::

        model = create_victim("wrmf", data.n_users, data.n_items, factors=64, iterations=15)
        model.fit(data)
    """

    description = "Weighted regularised matrix factorisation, fit by alternating least squares"
    paper = "Hu, Koren and Volinsky, ICDM 2008"

    Config = WRMFConfig

    def __init__(self, n_users: int, n_items: int, **config):
        super().__init__(n_users, n_items, **config)
        if self.config.solver not in ("cholesky", "cg"):
            raise ValueError(f"wrmf: solver must be 'cholesky' or 'cg', got {self.config.solver!r}")
        gen = set_seed(self.config.seed)
        f = self.config.factors
        self.user_factors = torch.nn.Parameter(torch.rand(n_users, f, generator=gen) * 0.01, requires_grad=False)
        self.item_factors = torch.nn.Parameter(torch.rand(n_items, f, generator=gen) * 0.01, requires_grad=False)

    def score(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_factors[users] @ self.item_factors.T

    def user_embeddings(self) -> torch.Tensor:
        """Every user's factors (spectral signatures read them)."""
        return self.user_factors.detach()

    def _gram(self, fixed: torch.Tensor) -> torch.Tensor:
        return fixed.T @ fixed + self.config.reg * torch.eye(fixed.shape[1], device=fixed.device, dtype=fixed.dtype)

    def solve_cholesky(self, fixed: torch.Tensor, buckets: _Buckets, current: torch.Tensor) -> torch.Tensor:
        """Exact solves, one batched Cholesky per degree bucket: A_u = Y^T Y + reg I + Y_u^T W_u Y_u."""
        gram = self._gram(fixed)
        out = current.clone()
        out[buckets.empty] = 0.0
        for rows, idx, w, valid in buckets.blocks:
            yb = fixed[idx]  # [B, D, f]; padded slots have w = 0 and valid = 0
            b = torch.bmm(((1.0 + w) * valid).unsqueeze(1), yb).squeeze(1)  # Y^T C^u p(u)
            a = gram + torch.bmm(yb.transpose(1, 2) * w.unsqueeze(1), yb)
            out[rows] = torch.cholesky_solve(b.unsqueeze(-1), torch.linalg.cholesky(a)).squeeze(-1)
        return out

    def solve_cg(self, fixed: torch.Tensor, side: _SparseSide, current: torch.Tensor) -> torch.Tensor:
        """``cg_steps`` conjugate-gradient steps per row, all rows at once, warm-started at ``current``.
        A_u v = v (Y^T Y + reg I) + sum_i w_ui (y_i . v) y_i: an SDDMM (``sampled_addmm``) and a CSR SpMM."""
        gram = self._gram(fixed)

        def matvec(v):
            return v @ gram + side.weighted_gram_matvec(v, fixed)

        x = current.clone()
        x[side.empty] = 0.0
        return conjugate_gradient(matvec, torch.sparse.mm(side.confidence, fixed), x, self.config.cg_steps, side.empty)

    def objective(self, side: _SparseSide) -> float:
        return float(wrmf_objective(self.user_factors, self.item_factors, side, self.config.reg))

    def fit(
        self, dataset: PreparedDataset, valid_split: str | None = None, progress: bool = True, on_epoch=None
    ) -> list[dict]:
        """ALS on the ``train`` split (read whole: ALS is full-batch), starting from the current factors.
        Repeated pairs add their ratings."""
        train = dataset.table("train")
        ratings = train.column("rating").to_numpy().astype(np.float32)
        user_csr = UserItemCSR.from_arrays(
            train.column("user_id").to_numpy(), train.column("item_id").to_numpy(), self.n_users, self.n_items, ratings
        )
        valid = UserItemCSR.from_table(dataset.table(valid_split), self.n_users, self.n_items) if valid_split else None
        return self.fit_matrix(user_csr, valid, progress, on_epoch)

    def fit_matrix(
        self,
        user_csr: UserItemCSR,
        valid: UserItemCSR | None = None,
        progress: bool = True,
        on_epoch=None,
        graded: bool = False,
    ) -> list[dict]:
        """ALS on a user-item matrix with values r_ui. The history holds the WRMF objective of every
        iteration for exact (Cholesky) ALS, which never increases it, and of the first and last for CG.
        ``graded``: preference r_ui instead of 1 (see :class:`_SparseSide`; CG solver only)."""
        cfg = self.config
        if graded and cfg.solver != "cg":
            raise ValueError("wrmf: graded preferences need solver='cg'")
        device = pick_device(cfg.device)
        self.to(device)
        r, c = user_csr.rows(np.arange(self.n_users))
        item_csr = UserItemCSR.from_arrays(c, r, self.n_items, self.n_users, user_csr.values)
        loss_side = _SparseSide(user_csr, cfg.alpha, device, graded)
        if cfg.solver == "cg":
            user_side, item_side = loss_side, _SparseSide(item_csr, cfg.alpha, device, graded)
            solve = self.solve_cg
        else:
            user_side = _Buckets(user_csr, cfg.alpha, cfg.bucket_entries, device)
            item_side = _Buckets(item_csr, cfg.alpha, cfg.bucket_entries, device)
            solve = self.solve_cholesky
        stopper = EarlyStopping(self, user_csr, valid, cfg.patience, device) if valid is not None else None
        history = []
        for it in tqdm(range(cfg.iterations), desc="wrmf fit", disable=not progress, unit="iter"):
            with torch.no_grad():
                self.user_factors.copy_(solve(self.item_factors, user_side, self.user_factors))
                self.item_factors.copy_(solve(self.user_factors, item_side, self.item_factors))
            record = {"epoch": it}
            if stopper is not None and stopper.due(it, cfg.iterations, cfg.eval_every):
                stopper.evaluate(record)
            if cfg.solver != "cg" or it in (0, cfg.iterations - 1) or (stopper is not None and stopper.stop):
                record["loss"] = self.objective(loss_side)  # an SDDMM in float64: 10% of a CG fit per iteration
            history.append(record)
            if on_epoch is not None:
                on_epoch(record)
            if stopper is not None and stopper.stop:
                break
        if stopper is not None:
            stopper.restore_best()
        return history
