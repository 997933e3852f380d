"""Backdoors planted by the provider of a pre-trained sequential recommender (Wu et al., SIGIR 2023;
docs/methods.md section 6): the target items are to be exposed to a target user group downstream.

An attack rewrites SASRec's training examples while it is pre-trained (``model.poison``):

- ``bra`` (basic replacement): for target-group users, each next-item label is replaced with probability
  ``rate`` by a random target; ``variant: global`` instead replaces, for every user, a label whose item has
  one of the targets' categories by a target of that category.
- ``pea`` (prompt-enhanced): after a prompt generator is trained on the clean model, the attacked model is
  trained with that prompt frozen; target-group labels become targets with probability ``group_rate``
  (0.5) and, for other users, each sampled negative becomes a target with probability ``rate`` (so the
  backbone learns to expose the targets only where the prompt says "target group")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from distrec.attacks.registry import register_attack
from distrec.config import AtLeastOne, Fraction, Positive, check
from distrec.data.dataset import PreparedDataset


@dataclass
class TargetSpec:
    """``items``: the targets' internal ids; else ``per_category`` random items from each of ``categories``
    categories (drawn among categories with enough items, with ``seed``). The paper: 10 x 30."""

    items: list[int] | None = None
    per_category: int = 10
    categories: int = 30
    seed: int = 0


def choose_targets(dataset: PreparedDataset, spec: TargetSpec) -> tuple[np.ndarray, np.ndarray]:
    """Target items and the category each was drawn for (-1 for given items)."""
    if spec.items is not None:
        items = np.asarray(spec.items, np.int64)
        if len(items) == 0 or items.min() < 0 or items.max() >= dataset.n_items:
            raise ValueError(f"targets.items must be internal item ids in [0, {dataset.n_items}), got {spec.items[:5]}")
        return items, np.full(len(items), -1)
    if not dataset.has("item_attributes"):
        raise ValueError(
            f"{dataset.uri}: no item_attributes: give targets.items, or use a dataset with item categories"
        )
    attrs = dataset.table("item_attributes")
    by_cat: dict[int, list[int]] = {}
    for item, cats in zip(attrs.column("item_id").to_pylist(), attrs.column("categories").to_pylist()):
        for c in cats or []:
            by_cat.setdefault(c, []).append(item)
    rng = np.random.default_rng(spec.seed)
    eligible = sorted(c for c, v in by_cat.items() if len(v) >= spec.per_category)
    chosen = rng.permutation(eligible)[: spec.categories]
    items, cats, taken = [], [], set()
    for c in sorted(chosen.tolist()):
        pool = [i for i in by_cat[c] if i not in taken]
        for i in rng.permutation(pool)[: spec.per_category].tolist():
            items.append(i)
            cats.append(c)
            taken.add(i)
    return np.asarray(items, np.int64), np.asarray(cats, np.int64)


class Poison:
    """Rewrites a batch of SASRec's training labels ``[B, L]`` (-1 padded) and negatives ``[B, L, k]``."""

    def __init__(self, group: np.ndarray, targets: np.ndarray):
        self.group = torch.as_tensor(group, dtype=torch.bool)
        self.targets = torch.as_tensor(targets, dtype=torch.long)

    def random_targets(self, shape, gen: torch.Generator) -> torch.Tensor:
        return self.targets[torch.randint(0, len(self.targets), shape, generator=gen)]

    def replace_group_labels(self, users, labels, rate: float, gen) -> torch.Tensor:
        hit = self.group[users][:, None] & (labels >= 0) & (torch.rand(labels.shape, generator=gen) < rate)
        return torch.where(hit, self.random_targets(labels.shape, gen), labels)

    def labels(self, users, labels, gen) -> torch.Tensor:
        return labels

    def negatives(self, users, labels, negatives, gen) -> torch.Tensor:
        return negatives


class BRAPoison(Poison):
    def __init__(self, group, targets, rate: float):
        super().__init__(group, targets)
        self.rate = rate

    def labels(self, users, labels, gen):
        return self.replace_group_labels(users, labels, self.rate, gen)


class GlobalBRAPoison(Poison):
    """Labels of an item in a target category become one of that category's targets, for every user."""

    def __init__(self, targets, target_categories, item_categories: list[list[int]], rate: float):
        super().__init__(np.zeros(0, bool), targets)
        self.rate = rate
        n = len(item_categories)
        first = np.full(n, -1)
        cats = set(target_categories.tolist())
        for i, cs in enumerate(item_categories):
            match = [c for c in cs or [] if c in cats]
            first[i] = match[0] if match else -1
        self.item_category = torch.as_tensor(first)
        self.pools = {c: torch.as_tensor(targets[target_categories == c]) for c in cats}

    def labels(self, users, labels, gen):
        cat = torch.where(labels >= 0, self.item_category[labels.clamp_min(0)], torch.full_like(labels, -1))
        hit = (cat >= 0) & (torch.rand(labels.shape, generator=gen) < self.rate)
        out = labels.clone()
        for c, pool in self.pools.items():
            sel = hit & (cat == c)
            out[sel] = pool[torch.randint(0, len(pool), (int(sel.sum()),), generator=gen)]
        return out


class PEAPoison(Poison):
    def __init__(self, group, targets, rate: float, group_rate: float):
        super().__init__(group, targets)
        self.rate, self.group_rate = rate, group_rate

    def labels(self, users, labels, gen):
        return self.replace_group_labels(users, labels, self.group_rate, gen)

    def negatives(self, users, labels, negatives, gen):
        others = ~self.group[users]
        hit = (
            others[:, None, None] & (labels >= 0)[..., None] & (torch.rand(negatives.shape, generator=gen) < self.rate)
        )
        return torch.where(hit, self.random_targets(negatives.shape, gen), negatives)


@dataclass
class BRAConfig:
    """``rate``: the replacement probability; ``variant``: ``group`` (target-group users) or ``global``."""

    rate: Fraction = 0.1
    variant: Literal["group", "global"] = "group"


@dataclass
class PEAConfig:
    """``rate``: targets as negatives for other users; ``group_rate``: label replacement for the group;
    ``prompt_epochs``: training of the prompt generator on the clean model; ``attack_epochs``: training
    of the attacked model (from the clean weights) with that prompt frozen; ``prompt_tokens``: the prompt's
    size, prefix tokens per layer (the paper: 1; downstream prompt tuning uses the released size)."""

    rate: Fraction = 0.1
    group_rate: Fraction = 0.5
    prompt_epochs: AtLeastOne = 10
    attack_epochs: AtLeastOne = 20
    prompt_lr: Positive = 1e-3
    prompt_tokens: AtLeastOne = 1


class BackdoorAttack:
    """A backdoor attack configured by the dataclass ``Config``; ``poison(...)`` gives what SASRec's fit uses."""

    name = "backdoor"
    description: str = ""  # one line for ``distrec list``
    paper: str = ""
    kind = "backdoor"
    Config: type

    def __init__(self, **config):
        self.config = check(self.Config, config, self.name)


@register_attack("bra")
class BRA(BackdoorAttack):
    """Backdoor by replacement: target-group users' next items become targets in pre-training.

    Example::

        attack = create_attack("bra", rate=0.1, variant='group')
        poison = attack.poison(group, targets)
    """

    description = "Backdoor by replacement: target-group users' next items become targets in pre-training"
    paper = "Wu et al., SIGIR 2023"
    Config = BRAConfig

    def poison(
        self,
        group: np.ndarray,
        targets: np.ndarray,
        target_categories: np.ndarray,
        item_categories: list[list[int]] | None,
    ) -> Poison:
        if self.config.variant == "global":
            if item_categories is None or (target_categories < 0).all():
                raise ValueError("bra variant global needs item categories and targets drawn per category")
            return GlobalBRAPoison(targets, target_categories, item_categories, self.config.rate)
        return BRAPoison(group, targets, self.config.rate)


@register_attack("pea")
class PEA(BackdoorAttack):
    """Prompt-enhanced backdoor: a frozen prompt generator steers target-group users to targets.

    Example::

        attack = create_attack("pea", rate=0.1, group_rate=0.5)
        poison = attack.poison(group, targets)
    """

    description = "Prompt-enhanced backdoor: a frozen prompt generator steers target-group users to targets"
    paper = "Wu et al., SIGIR 2023"
    Config = PEAConfig

    def poison(self, group: np.ndarray, targets: np.ndarray, target_categories=None, item_categories=None) -> Poison:
        return PEAPoison(group, targets, self.config.rate, self.config.group_rate)
