"""A supervised profile classifier in the DegreeSAD tradition (Li and Gao 2016; features of Chirita et al.
2005 and Williams et al. 2007 in their implicit-feedback form), trained only on fake profiles the defender
plants in its own clean data (random, bandwagon, popular at several sizes), so that the attacker's families
are never seen in training: cross-family by construction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

import numpy as np
import pydantic
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from distrec.config import AtLeastOne, Shares
from distrec.data.matrix import UserItemCSR
from distrec.defenses.pca_users import sparse
from distrec.defenses.planted import PLANTABLE, planted_profiles, stacked
from distrec.defenses.registry import register_defense
from distrec.defenses.screening import DataDefense, ScreeningConfig

FEATURES = ("log_degree", "mean_log_popularity", "std_log_popularity", "head_share", "degsim")


@dataclass
class ProfileClassifierConfig(ScreeningConfig):
    """``planted``: the heuristic attacks the defender plants; ``sizes``: their sizes as shares of the
    users; ``n_targets``: items each planted attack promotes; ``neighbours``: k of DegSim."""

    planted: Annotated[list[Literal[PLANTABLE]], pydantic.Field(min_length=1)] = field(
        default_factory=lambda: list(PLANTABLE)
    )
    sizes: Shares = field(default_factory=lambda: [0.01, 0.03])
    n_targets: AtLeastOne = 5
    neighbours: AtLeastOne = 10


def profile_features(train: UserItemCSR, neighbours: int, batch: int = 1024) -> np.ndarray:
    """Per user: log degree; mean and std of the log popularity of its items (popularity over ``train``);
    the share of its items in the top 10% by popularity; DegSim, the mean Jaccard similarity to its
    ``neighbours`` most similar users (Chirita et al. 2005)."""
    degrees = train.degrees().astype(np.float64)
    log_pop = np.log1p(np.bincount(train.indices, minlength=train.n_items).astype(np.float64))
    head = log_pop >= np.quantile(log_pop, 0.9)
    rows = np.repeat(np.arange(train.n_users), train.degrees())
    count = np.maximum(degrees, 1)
    mean = np.bincount(rows, log_pop[train.indices], train.n_users) / count
    std = np.sqrt(np.maximum(np.bincount(rows, log_pop[train.indices] ** 2, train.n_users) / count - mean**2, 0))
    head_share = np.bincount(rows, head[train.indices], train.n_users) / count
    x = sparse(train)
    degsim = np.zeros(train.n_users)
    k = min(neighbours, train.n_users - 1)
    for start in range(0, train.n_users, batch):
        stop = min(start + batch, train.n_users)
        inter = (x[start:stop] @ x.T).toarray()
        union = degrees[start:stop, None] + degrees[None, :] - inter
        jac = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        jac[np.arange(stop - start), np.arange(start, stop)] = -1.0
        degsim[start:stop] = np.sort(np.partition(jac, -k, axis=1)[:, -k:], axis=1).mean(1) if k > 0 else 0.0
    return np.column_stack([np.log1p(degrees), mean, std, head_share, degsim])


@register_defense("profile_classifier")
class ProfileClassifier(DataDefense):
    """Logistic regression on :func:`profile_features`: real users of the clean reference against the
    defender's planted fakes; a user's suspicion is its predicted probability of being fake.

    Example::

        detector = create_defense("profile_classifier", fpr=0.05, n_targets=5)
        screening = detector.screen(poisoned, reference=clean, fit=None, seed=0)
    """

    description = "Detector: a classifier on profile features, trained on the defender's own planted fakes"
    paper = "Williams, Mobasher and Burke, UMUAI 2007"

    Config = ProfileClassifierConfig

    def learn(self, reference: UserItemCSR, seed: int) -> None:
        c = self.config
        planted = planted_profiles(reference, c.planted, c.sizes, c.n_targets, seed)
        both = stacked(reference, planted)
        features = profile_features(both, c.neighbours)
        labels = np.r_[np.zeros(reference.n_users), np.ones(planted.n_users)]
        active = both.degrees() > 0
        self.model = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=1000))
        self.model.fit(features[active], labels[active])

    def scores(self, train, fit, seed):
        return self.model.predict_proba(profile_features(train, self.config.neighbours))[:, 1]
