"""What every injective attack sees and returns."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from distrec.attacks.budget import Budget
from distrec.config import check
from distrec.data.matrix import UserItemCSR


@dataclass
class AttackContext:
    """The attacker's knowledge: the real users' training interactions, the targets, the budget,
    (for Segment) each item's categories, and the item id map (for imported profiles). ``seed`` makes every random
    choice reproducible."""

    train: UserItemCSR
    targets: np.ndarray
    budget: Budget
    seed: int = 0
    item_categories: list[list[int]] | None = None
    item_map: pa.Table | None = None
    progress: bool = True
    device: torch.device = torch.device("cpu")

    @property
    def n_items(self) -> int:
        return self.train.n_items

    def popularity(self) -> np.ndarray:
        return np.bincount(self.train.indices, minlength=self.train.n_items).astype(np.float64)


class Attack:
    """An injective attack configured by the dataclass ``Config``; ``craft`` returns the binary fake
    profiles ``[budget.n_fake, n_items]``, each holding every target and at most ``n_filler`` items."""

    name: str = "attack"
    description: str = ""  # one line for ``distrec list``
    paper: str = ""
    kind = "injective"
    Config: type
    uses_surrogate: bool = False
    holds_every_target: bool = True  # False: profiles made elsewhere may lack a target (counted, not refused)

    def __init__(self, **config):
        self.config = check(self.Config, config, self.name)

    @property
    def label(self) -> str:
        return self.name

    def craft(self, ctx: AttackContext, surrogate=None) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def input_id(cls, config: dict) -> str | None:
        """A digest of the files ``config`` names, for the craft's content id (a changed file is a new craft);
        ``None`` for an attack that reads no file. Raises ``ValueError`` for a file that is missing or wrong."""
        return None

    def describe(self) -> dict:
        return {"attack": self.label, "config": dataclasses.asdict(self.config)}
