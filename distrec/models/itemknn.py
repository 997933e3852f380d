"""ItemKNN: item-based collaborative filtering (Sarwar et al., WWW 2001; Deshpande and Karypis, TOIS 2004),
the memory-based base recommender of PORE's ensembles: it can be fit on any subset of users and still
recommends to every user from that user's own history."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse import csr_matrix, diags

from distrec.config import AtLeastOne, NonNegative
from distrec.data.dataset import PreparedDataset
from distrec.data.matrix import UserItemCSR
from distrec.models.base import Victim
from distrec.models.registry import register_victim


@dataclass
class ItemKNNConfig:
    """``neighbours``: the most similar items kept per item; ``shrink``: the cosine's shrinkage term;
    ``seed``: unused by the model (kept so that every victim takes a seed)."""

    neighbours: AtLeastOne = 50
    shrink: NonNegative = 10.0
    seed: int = 0
    device: str | None = None


def user_matrix(train: UserItemCSR) -> csr_matrix:
    return csr_matrix(
        (np.ones(len(train.indices), np.float32), train.indices, train.indptr), shape=(train.n_users, train.n_items)
    )


def item_similarity(
    x: csr_matrix, neighbours: int, shrink: float, user_weights: np.ndarray | None = None
) -> csr_matrix:
    """sim(i, j) = c_ij / (sqrt(c_ii c_jj) + shrink) with c = X^T W X (W: each user's weight, its number of
    draws in a bagged subsample), no self-similarity, the ``neighbours`` largest per item."""
    w = x if user_weights is None else diags(user_weights.astype(np.float32)) @ x
    co = (x.T @ w).tocsr().astype(np.float32)
    d = np.sqrt(co.diagonal())
    co.setdiag(0)
    co.eliminate_zeros()
    co = co.tocoo()
    values = co.data / (d[co.row] * d[co.col] + shrink)
    order = np.lexsort((-values, co.row))  # by item, then by similarity, largest first
    row, col, values = co.row[order], co.col[order], values[order]
    starts = np.searchsorted(row, np.arange(co.shape[0]))
    keep = np.arange(len(row)) - starts[row] < neighbours
    return csr_matrix((values[keep], (row[keep], col[keep])), shape=co.shape)


def recommend(x: csr_matrix, sim: csr_matrix, users: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` best items ``[len(users), n]`` by score(u, j) = sum_{i in I_u} sim(i, j), each user's own
    items excluded (ties by item id)."""
    xu = x[users]
    scores = np.asarray((xu @ sim).todense(), np.float64)
    scores[xu.nonzero()] = -np.inf
    scores -= np.arange(scores.shape[1]) * 1e-12  # deterministic ties: the lower item id first
    top = np.argpartition(-scores, n - 1, axis=1)[:, :n]
    return np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), axis=1), 1)


@register_victim("itemknn")
class ItemKNN(Victim):
    """score(u, j) = sum over u's training items i of sim(i, j) (:func:`item_similarity`).

    Example::

        model = create_victim("itemknn", data.n_users, data.n_items, neighbours=50, shrink=10.0)
        model.fit(data)
    """

    description = "Item-based nearest-neighbour CF over cosine item similarities; PORE's base model"
    paper = "Sarwar et al., WWW 2001"

    Config = ItemKNNConfig

    def __init__(self, n_users: int, n_items: int, **config):
        super().__init__(n_users, n_items, **config)
        k = self.config.neighbours
        self.register_buffer("neighbour_ids", torch.zeros(n_items, k, dtype=torch.long))
        self.register_buffer("neighbour_sims", torch.zeros(n_items, k))
        self.history: torch.Tensor | None = None

    def fit(
        self, dataset: PreparedDataset, valid_split: str | None = None, progress: bool = True, on_epoch=None
    ) -> list[dict]:
        x = user_matrix(
            UserItemCSR.from_table(dataset.table("train", ["user_id", "item_id"]), self.n_users, self.n_items)
        )
        sim = item_similarity(x, self.config.neighbours, self.config.shrink)
        ids, sims = torch.zeros_like(self.neighbour_ids), torch.zeros_like(self.neighbour_sims)
        for i in range(self.n_items):
            lo, hi = sim.indptr[i], sim.indptr[i + 1]
            ids[i, : hi - lo] = torch.as_tensor(sim.indices[lo:hi])
            sims[i, : hi - lo] = torch.as_tensor(sim.data[lo:hi])
        self.neighbour_ids.copy_(ids)
        self.neighbour_sims.copy_(sims)
        self.attach(dataset)
        return [{"epoch": 0, "items_with_neighbours": int((sim.getnnz(1) > 0).sum())}]

    def attach(self, dataset: PreparedDataset) -> ItemKNN:
        train = UserItemCSR.from_table(dataset.table("train", ["user_id", "item_id"]), self.n_users, self.n_items)
        rows = torch.repeat_interleave(torch.arange(self.n_users), torch.as_tensor(train.degrees()))
        self.history = torch.sparse_coo_tensor(
            torch.stack([rows, torch.as_tensor(train.indices)]), torch.ones(len(rows)), (self.n_users, self.n_items)
        ).coalesce()
        return self

    def similarity(self) -> torch.Tensor:
        rows = torch.arange(self.n_items).repeat_interleave(self.config.neighbours)
        return torch.sparse_coo_tensor(
            torch.stack([rows, self.neighbour_ids.reshape(-1)]),
            self.neighbour_sims.reshape(-1),
            (self.n_items, self.n_items),
        ).coalesce()

    def score(self, users: torch.Tensor) -> torch.Tensor:
        if self.history is None:
            raise RuntimeError("itemknn has no user histories: call fit() or attach() first")
        rows = torch.index_select(self.history, 0, users.cpu()).to_dense()
        return torch.sparse.mm(self.similarity().t(), rows.t()).t().to(users.device)


def bagged_votes(
    train: UserItemCSR, n_eval: int, samples, top_n: int, neighbours: int = 50, shrink: float = 10.0, **_
) -> np.ndarray:
    """Votes ``[n_eval, n_items]`` of base ItemKNN models, one per ``(model id, drawn users)`` in
    ``samples``: each fit on its drawn users (weighted by draws), recommending ``top_n`` items to each of
    the first ``n_eval`` users from their own histories (the victim's other keys play no part)."""
    x = user_matrix(train)
    votes = np.zeros((n_eval, train.n_items), np.int32)
    rows = np.arange(n_eval)[:, None]
    for _, drawn in samples:
        sim = item_similarity(x, neighbours, shrink, np.bincount(drawn, minlength=train.n_users))
        np.add.at(votes, (rows, recommend(x, sim, np.arange(n_eval), top_n)), 1)
    return votes


ItemKNN.bagged_votes = staticmethod(bagged_votes)
