"""Fake profiles made by another tool, brought in through the same budget checks and output."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distrec.attacks.base import Attack, AttackContext
from distrec.attacks.profiles import read_profiles
from distrec.attacks.registry import register_attack


@dataclass
class ImportedConfig:
    path: str = ""


@register_attack("import")
class ImportedProfiles(Attack):
    """Reads ``path`` (one fake user per line, original item ids; see :func:`read_profiles`). The
    profiles must fit the budget and hold every target, as crafted ones do; fewer profiles than
    ``n_fake`` is allowed."""

    Config = ImportedConfig

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
