"""Data defenses: score every user of the training interactions, remove the suspicious ones before the
victim is fit (docs/methods.md section 2b).

The contract that keeps a detector honest:

- it sees the training table's ``user_id`` and ``item_id`` columns only (:func:`training_matrix`), never
  ``is_fake``;
- it is never told how many fake users there are: its threshold is the ``1 - fpr`` quantile of the scores
  it gives the users of a clean reference the defender holds (the study's clean data), so that about
  ``fpr`` of clean users are removed;
- a threshold that would remove every user is an error, one that removes none is a reported warning."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from distrec.config import Share
from distrec.data.dataset import InMemoryDataset, PreparedDataset
from distrec.data.matrix import UserItemCSR
from distrec.defenses.registry import Defense

# fit(train) -> the column's victim trained on these interactions (for detectors that read a model)
FitVictim = Callable[[UserItemCSR], object]


class ScreeningError(ValueError):
    """A data defense that cannot screen this data (it would remove every user)."""


@dataclass
class ScreeningConfig:
    """``fpr``: the share of the clean reference's users the threshold removes (the false-positive rate
    the defender accepts)."""

    fpr: Share = 0.05


@dataclass
class Screening:
    """What a data defense did: every user's ``scores`` (NaN for users with no training interaction),
    the ``threshold`` set on the reference, the ``removed`` users, the share and mask of the reference's users
    the threshold removes (``reference_removed``, ``reference_mask``), and ``warnings``."""

    defense: str
    scores: np.ndarray
    threshold: float
    removed: np.ndarray
    reference_removed: float
    warnings: list[str] = field(default_factory=list)
    reference_mask: np.ndarray | None = None

    def summary(self) -> dict:
        return {
            "defense": self.defense,
            "threshold": float(self.threshold),
            "removed_users": int(self.removed.sum()),
            "reference_removed_share": round(self.reference_removed, 4),
            "warnings": self.warnings,
        }


def training_matrix(data: PreparedDataset) -> UserItemCSR:
    """The training interactions as a detector may see them: user and item ids, nothing else."""
    table = data.table("train", ["user_id", "item_id"])
    return UserItemCSR.from_table(table, data.n_users, data.n_items)


def without_users(data: PreparedDataset, removed: np.ndarray) -> InMemoryDataset:
    """``data`` with the training interactions of the ``removed`` users dropped (ids and sizes kept; the
    removed users stay in the id space and get what an untrained row recommends)."""
    tables = {name: data.table(name) for name in data.metadata["tables"]}
    train = tables["train"]
    keep = pc.invert(pc.is_in(train.column("user_id"), pa.array(np.flatnonzero(removed).astype(np.int64))))
    tables["train"] = train.filter(keep)
    meta = {k: v for k, v in data.metadata.items() if k != "tables"}
    return InMemoryDataset(tables, meta, data.uri)


class DataDefense(Defense):
    """Scores users; ``screen`` sets the threshold on the reference and removes the users above it."""

    kind = "data"
    Config = ScreeningConfig

    @classmethod
    def supports(cls, victim_cls: type) -> bool:
        return True

    def learn(self, reference: UserItemCSR, seed: int) -> None:
        """Learn from the clean reference before scoring (a classifier trains on it with planted fakes)."""

    def scores(self, train: UserItemCSR, fit: FitVictim, seed: int) -> np.ndarray:
        """Every user's suspicion (higher: more likely fake); ``fit`` trains the column's victim on a
        dataset built from ``train`` where a detector reads a model."""
        raise NotImplementedError

    def scores_with_gradient(self, train: UserItemCSR, n_fake: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Every user's suspicion (as :meth:`scores`) and, ``[n_fake, n_items]``, the gradient of the summed
        suspicion of ``train``'s last ``n_fake`` users with respect to their binary rows, the detector's fit to
        ``train`` held fixed (an adaptive attacker's penalty), from one fit; a detector whose score has no
        gradient raises ``NotImplementedError``."""
        raise NotImplementedError(f"{self.name}'s score is not differentiable in the profiles")

    @classmethod
    def differentiable(cls) -> bool:
        return cls.scores_with_gradient is not DataDefense.scores_with_gradient

    def screen(
        self, data: PreparedDataset, reference: PreparedDataset, fit: Callable[[PreparedDataset], object], seed: int
    ) -> Screening:
        """Score ``data``'s users, threshold at the reference's ``1 - fpr`` quantile, and say whom to remove."""
        ref_train = training_matrix(reference)
        self.learn(ref_train, seed)
        ref_active = ref_train.degrees() > 0
        ref_scores = self.scores(ref_train, lambda m: fit(_with_train(reference, m)), seed)
        threshold = float(np.quantile(ref_scores[ref_active], 1 - self.config.fpr, method="higher"))
        reference_mask = ref_active & (ref_scores > threshold)
        train = training_matrix(data)
        active = train.degrees() > 0
        scores = np.where(active, self.scores(train, lambda m: fit(_with_train(data, m)), seed), np.nan)
        removed = active & (scores > threshold)
        warnings = []
        if removed.sum() == active.sum():
            raise ScreeningError(
                f"defense {self.name}: its threshold {threshold:.4g} (fpr {self.config.fpr}) removes every one of the "
                f"{int(active.sum())} users"
            )
        if not removed.any():
            warnings.append(f"{self.name} removed no user at threshold {threshold:.4g} (fpr {self.config.fpr})")
        reference_removed = float(reference_mask.sum() / ref_active.sum())
        return Screening(self.name, scores, threshold, removed, reference_removed, warnings, reference_mask)


def _with_train(data: PreparedDataset, train: UserItemCSR) -> InMemoryDataset:
    """``data`` whose training split holds exactly ``train``'s interactions (as a detector built them)."""
    from distrec.data.schema import interactions_table

    users, items = train.keys() // train.n_items, train.keys() % train.n_items
    tables = {name: data.table(name) for name in data.metadata["tables"]}
    tables["train"] = interactions_table(users, items)
    meta = {k: v for k, v in data.metadata.items() if k != "tables"}
    return InMemoryDataset(tables, meta, data.uri)
