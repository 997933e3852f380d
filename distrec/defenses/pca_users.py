"""PCA-SelectUsers (Mehta and Nejdl, UMUAI 2009, section 4): fake profiles are highly correlated with each
other and so contribute little to the principal components of the users-as-variables data; a user's
suspicion is minus its weight in the top ``components`` principal components."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.linalg import LinearOperator, svds

from distrec.config import AtLeastOne
from distrec.data.matrix import UserItemCSR
from distrec.defenses.registry import register_defense
from distrec.defenses.screening import DataDefense, ScreeningConfig


@dataclass
class PCAUsersConfig(ScreeningConfig):
    """``components``: the top principal components a user's weight is summed over (paper: 3)."""

    components: AtLeastOne = 3


def sparse(train: UserItemCSR) -> csr_matrix:
    return csr_matrix(
        (np.ones(len(train.indices), np.float64), train.indices, train.indptr), shape=(train.n_users, train.n_items)
    )


def zscored_rows(train: UserItemCSR) -> LinearOperator:
    """Z = D^-1 (X - m 1^T): each user's row of the binary matrix z-scored over the items (the paper's
    z-scores), as an operator that never builds the dense matrix. Users with no interaction are rows of 0."""
    x = sparse(train)
    m = train.degrees() / train.n_items
    s = np.sqrt(m * (1 - m))
    inv = np.divide(1.0, s, out=np.zeros_like(s), where=s > 0)

    def matvec(v):
        v = np.asarray(v).ravel()
        return inv * (x @ v - m * v.sum())

    def rmatvec(w):
        w = np.asarray(w).ravel() * inv
        return x.T @ w - (m * w).sum()

    return LinearOperator((train.n_users, train.n_items), matvec=matvec, rmatvec=rmatvec, dtype=np.float64)


def top_components(train: UserItemCSR, components: int, seed: int):
    """The top ``components`` singular triplets (U, s, V^T) of Z (:func:`zscored_rows`)."""
    k = min(components, min(train.n_users, train.n_items) - 1)
    v0 = np.random.default_rng(seed).standard_normal(min(train.n_users, train.n_items))
    return svds(zscored_rows(train), k=k, v0=v0, random_state=seed)


def pc_weights(train: UserItemCSR, components: int, seed: int) -> np.ndarray:
    """sum_k U[u, k]^2 over the top ``components`` principal components of the users-as-variables data
    (the items are the observations; each user's variable is centred by its z-scoring), i.e. the left
    singular vectors of Z."""
    u, _, _ = top_components(train, components, seed)
    return (u**2).sum(1)


@register_defense("pca")
class PCASelectUsers(DataDefense):
    """Removes the users who weigh least in the top principal components.

    Example::

        detector = create_defense("pca", fpr=0.05, components=3)
        screening = detector.screen(poisoned, reference=clean, fit=None, seed=0)
    """

    description = "Detector: the users who weigh least in the top principal components (PCA-SelectUsers)"
    paper = "Mehta and Nejdl, UMUAI 2009"

    Config = PCAUsersConfig

    def scores(self, train, fit, seed):
        return -pc_weights(train, self.config.components, seed)

    def scores_with_gradient(self, train, n_fake, seed):
        """With U = Z V S^-1, a user's weight is w_u = ||z_u V S^-1||^2 and z_u = (x_u - m_u) / s_u (its
        degree, so m_u and s_u, fixed by the budget): d(-w_u)/dx_u = -(2 / s_u) z_u V S^-2 V^T."""
        u, sv, vt = top_components(train, self.config.components, seed)
        rows = np.arange(train.n_users - n_fake, train.n_users)
        m = train.degrees()[rows] / train.n_items
        s = np.sqrt(m * (1 - m))
        inv = np.divide(1.0, s, out=np.zeros_like(s), where=s > 0)
        x = np.zeros((n_fake, train.n_items))
        r, c = train.rows(rows)
        x[r, c] = 1.0
        z = (x - m[:, None]) * inv[:, None]
        return -(u**2).sum(1), -2.0 * inv[:, None] * (((z @ vt.T) / sv**2) @ vt)
