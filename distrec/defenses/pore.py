"""PORE, a provably robust recommender by bagging (Jia, Liu, Hu, Gong, USENIX Security 2023): ``n_models``
base recommenders, each fit on ``subsample`` users drawn uniformly with replacement, recommend each user the
``top_n`` items with the most base-model votes.

The certificate (our derivation, in the paper's spirit; checked by brute force in the tests). A draw of s
users from n real plus e fake ones holds no fake user with probability (n / (n + e))^s, and is then a clean
draw; so each item's vote probability under attack is p'_i = (1 - delta) p_i + delta q_i with
delta = 1 - (n / (n + e))^s and q_i in [0, 1] the attacker's. With Clopper-Pearson bounds lo_i <= p_i <= hi_i
(simultaneous over the items, each at ``alpha / n_items``):

- a target t stays out of a user's top-N while at least N other items j keep (1 - delta) lo_j >
  (1 - delta) hi_t + delta;
- a clean item i stays in while fewer than N other items j can reach (1 - delta) hi_j + delta >=
  (1 - delta) lo_i.

Each holds for every e with delta(e) below a per-(user, item) bound, turned here into the largest certified
number of fake users."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import beta

from distrec.config import AtLeastOne, Share
from distrec.data.matrix import UserItemCSR
from distrec.defenses.registry import TrainingDefense, register_defense


@dataclass
class POREConfig:
    """``n_models``: base recommenders (T); ``subsample``: users per base model (s); ``top_n``: N, the
    items each base model votes for and the ensemble recommends; ``alpha``: each user's certificate fails
    with probability at most alpha; ``models_per_unit``: base models per engine unit."""

    n_models: AtLeastOne = 100
    subsample: AtLeastOne = 200
    top_n: AtLeastOne = 50
    alpha: Share = 0.001
    models_per_unit: AtLeastOne = 25


@register_defense("pore")
class PORE(TrainingDefense):
    """An ensemble of base recommenders fit on bagged users; the study engine trains its base models as
    units (``models_per_unit`` each) and the column's cell votes. A PORE column holds no other defense.

    Example (a study column, ``itemknn+pore``; the certificate is :func:`certify`)::

        defenses: {pore: {n_models: 1000, subsample: 20, top_n: 50}}
        columns: [itemknn, itemknn+pore]
    """

    description = "Certified bagging: base models on random user subsets recommend by vote"
    paper = "Jia et al., USENIX Security 2023"

    Config = POREConfig
    alone = True

    @classmethod
    def supports(cls, victim_cls: type) -> bool:
        return hasattr(victim_cls, "bagged_votes")

    def apply(self, victim):
        raise TypeError(
            "pore is an ensemble the study engine trains base model by base model; put it in a study column"
        )


def delta(e, n: int, s: int):
    """1 - (n / (n + e))^s: the probability that a draw of s users from n real and e fake ones holds a fake."""
    return 1.0 - (n / (n + np.asarray(e, np.float64))) ** s


def largest_e(bound: np.ndarray, n: int, s: int) -> np.ndarray:
    """The largest e with delta(e) < ``bound`` (-1 where even e = 0 is not certified)."""
    bound = np.asarray(bound, np.float64)
    out = np.full(bound.shape, -1, np.int64)
    ok = bound > 0
    with np.errstate(divide="ignore"):
        limit = n * ((1.0 - np.minimum(bound[ok], 1.0)) ** (-1.0 / s) - 1.0)  # delta(e) < bound  <=>  e < limit
    out[ok] = np.where(np.isfinite(limit), np.ceil(limit) - 1, np.iinfo(np.int64).max // 2)
    return out


def vote_bounds(counts: np.ndarray, n_models: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Clopper-Pearson bounds of each vote probability at level ``alpha`` (per bound: alpha / 2)."""
    k = np.asarray(counts, np.float64)
    lo = np.where(k > 0, beta.ppf(alpha / 2, k, n_models - k + 1), 0.0)
    hi = np.where(k < n_models, beta.isf(alpha / 2, k + 1, n_models - k), 1.0)
    return np.nan_to_num(lo), np.nan_to_num(hi, nan=1.0)


def certified_out(lo: np.ndarray, hi: np.ndarray, allowed: np.ndarray, target: int, top_n: int, n: int, s: int) -> int:
    """The most fake users for which ``target`` provably stays out of the top ``top_n`` (``allowed``: the
    items the user can be recommended)."""
    others = allowed.copy()
    others[target] = False
    gap = lo[others] - hi[target]
    d = np.sort(np.divide(gap, 1 + gap, out=np.zeros_like(gap), where=gap > 0))[::-1]
    return int(largest_e(d[top_n - 1] if len(d) >= top_n else 0.0, n, s))


def certified_in(lo: np.ndarray, hi: np.ndarray, allowed: np.ndarray, item: int, top_n: int, n: int, s: int) -> int:
    """The most fake users for which ``item`` provably stays in the top ``top_n``."""
    others = allowed.copy()
    others[item] = False
    gap = lo[item] - hi[others]
    g = np.sort(np.divide(gap, 1 + gap, out=np.zeros_like(gap), where=gap > 0))
    if len(g) < top_n:
        return np.iinfo(np.int64).max // 2
    return int(largest_e(g[top_n - 1], n, s))


def bagged_samples(n_users: int, subsample: int, model_ids, seed: int):
    """The users of each base model: ``subsample`` draws with replacement, one generator per (seed, model)."""
    for m in model_ids:
        yield m, np.random.default_rng([seed, m]).integers(0, n_users, subsample)


def certify(
    counts: np.ndarray,
    train: UserItemCSR,
    test: UserItemCSR,
    targets: np.ndarray,
    config: POREConfig,
    n: int,
    fakes: list[int],
) -> dict:
    """The certified curves of a clean ensemble's votes ``counts`` [users, items] at each number of fake
    users in ``fakes``: ``t_hr_bound`` (the most T-HR@N any attack of that size can reach: the share of
    (user, target) pairs not certified out) and ``recall`` (certified Recall@N: the test items certified
    in, per user)."""
    alpha_each = config.alpha / train.n_items
    out_e, in_e, in_w = [], [], []
    for u in range(counts.shape[0]):
        lo, hi = vote_bounds(counts[u], config.n_models, alpha_each)
        allowed = np.ones(train.n_items, bool)
        allowed[train.indices[train.indptr[u] : train.indptr[u + 1]]] = False
        out_e += [certified_out(lo, hi, allowed, t, config.top_n, n, config.subsample) for t in targets if allowed[t]]
        items = test.indices[test.indptr[u] : test.indptr[u + 1]]
        in_e += [certified_in(lo, hi, allowed, i, config.top_n, n, config.subsample) for i in items if allowed[i]]
        in_w += [1.0 / len(items)] * int(allowed[items].sum())
    out_e, in_e, in_w = np.asarray(out_e), np.asarray(in_e), np.asarray(in_w)
    users = max(int((test.degrees()[: counts.shape[0]] > 0).sum()), 1)
    return {
        "fake_users": list(fakes),
        "t_hr_bound": [float((out_e < e).mean()) if len(out_e) else 0.0 for e in fakes],
        "recall": [float(in_w[in_e >= e].sum() / users) for e in fakes],
        "median_certified_out": float(np.median(out_e)) if len(out_e) else None,
    }


def fake_grid(n: int, share: float = 0.05, points: int = 11) -> list[int]:
    """0 .. ``share`` of ``n`` fake users in ``points`` steps."""
    return sorted({int(round(x)) for x in np.linspace(0, max(1, math.ceil(share * n)), points)})


class VoteEnsemble(torch.nn.Module):
    """The ensemble as a scorer: a user's score of an item is its number of votes (ties: lower item id)."""

    @dataclass
    class Config:
        device: str | None = None

    def __init__(self, votes: np.ndarray, n_users: int):
        super().__init__()
        full = np.zeros((n_users, votes.shape[1]), np.float32)
        full[: len(votes)] = votes
        self.votes = torch.as_tensor(full - np.arange(votes.shape[1], dtype=np.float32) * 1e-6)
        self.config = self.Config()

    def score(self, users: torch.Tensor) -> torch.Tensor:
        return self.votes[users.cpu()].to(users.device)
