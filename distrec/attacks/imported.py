"""Fake profiles made elsewhere, brought in through the same budget checks and output: a profile file of
another tool (``import``) or the fake users of a poisoned dataset (``poisoned``)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pyarrow.compute as pc
import torch

from distrec.attacks.base import Attack, AttackContext
from distrec.attacks.poisoned import fake_profiles
from distrec.attacks.profiles import read_profiles
from distrec.attacks.registry import register_attack
from distrec.data.dataset import PreparedDataset


@dataclass
class ImportedConfig:
    path: str = ""


@register_attack("import")
class ImportedProfiles(Attack):
    """Reads ``path`` (one fake user per line, original item ids; see :func:`read_profiles`). The
    profiles must fit the budget, as crafted ones do; fewer profiles than ``n_fake`` is allowed, and so is a
    profile that lacks a target (ARLib's DLAttack writes some): such profiles are counted in the craft's
    ``profiles_without_every_target``.

    Example::

        attack = create_attack("import", path="aush_profiles.txt")
        fake = attack.craft(ctx)
    """

    description = "Fake profiles made by another tool, read from a file of original item ids"
    paper = "distrec"

    Config = ImportedConfig
    holds_every_target = False

    @classmethod
    def input_id(cls, config: dict) -> str | None:
        path = Path(config.get("path") or "")
        if not path.is_file():
            raise ValueError(f"path: {str(path) or '(empty)'} is not a file of fake profiles")
        return hashlib.sha256(path.read_bytes()).hexdigest()

    def craft(self, ctx: AttackContext, surrogate=None) -> torch.Tensor:
        if not self.config.path:
            raise ValueError("import: set path=<file of fake profiles>")
        if ctx.item_map is None:
            raise ValueError("import: the dataset has no item map to resolve original item ids")
        profiles = read_profiles(self.config.path, ctx.item_map)
        fake = torch.zeros(len(profiles), ctx.n_items)
        for row, items in enumerate(profiles):
            fake[row, torch.as_tensor(items)] = 1.0
        return fake


@dataclass
class PoisonedConfig:
    path: str = ""


@register_attack("poisoned")
class PoisonedProfiles(Attack):
    """The fake users of the poisoned dataset at ``path`` (written by ``distrec attack`` or a study's craft),
    their items mapped by original id onto the attacked dataset: how ``distrec evaluate-attack`` puts an
    attack crafted earlier into a study.

    Example::

        attack = create_attack("poisoned", path="runs/revadv")
        fake = attack.craft(ctx)
    """

    description = "The fake users of a poisoned dataset written earlier (distrec attack, a study's craft)"
    paper = "distrec"

    Config = PoisonedConfig

    @classmethod
    def input_id(cls, config: dict) -> str:
        try:
            data = PreparedDataset(config.get("path") or "")
        except (OSError, ValueError) as exc:
            raise ValueError(f"path: {config.get('path') or '(empty)'} is not a prepared dataset ({exc})") from None
        if data.metadata.get("attack") is None:
            raise ValueError(f"path: {data.uri} is not a poisoned dataset (no 'attack' in its metadata)")
        return data.content_id

    def craft(self, ctx: AttackContext, surrogate=None) -> torch.Tensor:
        data = PreparedDataset(self.config.path)
        rows, items = fake_profiles(data)
        if ctx.item_map is not None:  # the attacked dataset's internal id of each of the file's items
            source = data.table("item_map").sort_by("internal").column("original")
            position = pc.index_in(source, value_set=ctx.item_map.column("original"))
            if position.null_count:
                raise ValueError(f"poisoned: {data.uri} holds items the attacked dataset does not")
            items = ctx.item_map.column("internal").to_numpy()[position.to_numpy()[items]]
        fake = torch.zeros(int(rows.max(initial=-1)) + 1, ctx.n_items)
        fake[torch.as_tensor(rows), torch.as_tensor(items)] = 1.0
        return fake
