"""Heuristic shilling baselines in their implicit-feedback form (docs/methods.md section 2): every fake
profile holds all targets plus ``n_filler - len(targets)`` filler items chosen without replacement."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from distrec.attacks.base import Attack, AttackContext
from distrec.attacks.profiles import project_profiles
from distrec.attacks.registry import register_attack
from distrec.config import Fraction, UnitInterval


def sample_fillers(weights: np.ndarray, ctx: AttackContext, rng: np.random.Generator) -> torch.Tensor:
    """Fake profiles whose fillers are drawn per row without replacement with probability proportional
    to ``weights`` ([n_items] or [n_fake, n_items]; targets excluded), by Gumbel top-k."""
    w = np.broadcast_to(np.asarray(weights, np.float64), (ctx.budget.n_fake, ctx.n_items)).copy()
    w[:, ctx.targets] = 0.0
    available = (w > 0).sum(1).min()
    need = ctx.budget.n_filler - len(ctx.targets)
    if available < need:
        raise ValueError(f"only {available} candidate filler items for {need} filler slots per fake user")
    with np.errstate(divide="ignore"):
        keys = np.log(w) - np.log(-np.log(rng.random(w.shape)))
    return project_profiles(torch.as_tensor(keys), ctx.targets, ctx.budget.n_filler)


def two_pool_fillers(
    ctx: AttackContext, rng: np.random.Generator, first: np.ndarray, n_first: int, second: np.ndarray
) -> torch.Tensor:
    """Fake profiles with ``n_first`` fillers uniformly from ``first`` and the remaining slots
    uniformly from ``second`` (both without targets)."""
    need = ctx.budget.n_filler - len(ctx.targets)
    if n_first > len(first) or need - n_first > len(second):
        raise ValueError(f"{len(first)} + {len(second)} candidate items cannot fill {n_first} + {need - n_first} slots")
    fake = torch.zeros(ctx.budget.n_fake, ctx.n_items)
    for row in range(ctx.budget.n_fake):
        fake[row, rng.choice(first, n_first, replace=False)] = 1.0
        fake[row, rng.choice(second, need - n_first, replace=False)] = 1.0
    fake[:, torch.as_tensor(ctx.targets)] = 1.0
    return fake


@dataclass
class RandomConfig:
    pass


@register_attack("random")
class RandomAttack(Attack):
    """Random attack: fillers uniform over all items.

    Example::

        attack = create_attack("random")
        fake = attack.craft(ctx)
    """

    description = "Fake users whose fillers are drawn uniformly"
    paper = "Lam and Riedl, WWW 2004"

    Config = RandomConfig

    def craft(self, ctx: AttackContext, surrogate=None) -> torch.Tensor:
        return sample_fillers(np.ones(ctx.n_items), ctx, np.random.default_rng(ctx.seed))


@dataclass
class PopularConfig:
    pass


@register_attack("popular")
class PopularAttack(Attack):
    """Average / popular attack, implicit form: fillers drawn with probability proportional to item
    popularity (the implicit counterpart of rating fillers at their average).

    Example::

        attack = create_attack("popular")
        fake = attack.craft(ctx)
    """

    description = "Fake users whose fillers are drawn by item popularity (average attack, implicit form)"
    paper = "Lam and Riedl, WWW 2004"

    Config = PopularConfig

    def craft(self, ctx: AttackContext, surrogate=None) -> torch.Tensor:
        return sample_fillers(ctx.popularity(), ctx, np.random.default_rng(ctx.seed))


@dataclass
class BandwagonConfig:
    """``popular``: ``sampled`` (the default: the popular slots drawn at random from the ``top_fraction`` most
    popular items, a different draw per fake user) or ``exact`` (ARLib's fill: every fake user holds the same,
    most popular items). ARLib's profiles also exceed the budget (the average degree in popular items, half as
    many random ones, plus the targets); distrec keeps ``n_filler``."""

    popular_share: UnitInterval = 0.5
    top_fraction: Fraction = 0.1
    popular: Literal["sampled", "exact"] = "sampled"


@register_attack("bandwagon")
class BandwagonAttack(Attack):
    """Bandwagon attack: ``popular_share`` of the filler slots from the ``top_fraction`` most popular
    items (drawn, or with ``popular: exact`` the most popular ones themselves, as ARLib fills them), the rest
    uniformly from the other items.

    Example::

        attack = create_attack("bandwagon", popular_share=0.5, top_fraction=0.1)
        fake = attack.craft(ctx)
    """

    description = "Fake users: a share of fillers from the most popular items, the rest random"
    paper = "Burke et al., ITWP 2005"

    Config = BandwagonConfig

    def craft(self, ctx: AttackContext, surrogate=None) -> torch.Tensor:
        cfg = self.config
        rng = np.random.default_rng(ctx.seed)
        order = np.argsort(-ctx.popularity(), kind="stable")
        order = order[~np.isin(order, ctx.targets)]
        top = order[: max(1, int(round(cfg.top_fraction * ctx.n_items)))]
        n_pop = min(int(round(cfg.popular_share * (ctx.budget.n_filler - len(ctx.targets)))), len(top))
        if cfg.popular == "exact":
            top = top[:n_pop]
        return two_pool_fillers(ctx, rng, top, n_pop, order[len(top) :])


@dataclass
class SegmentConfig:
    segment_share: float = 1.0


@register_attack("segment")
class SegmentAttack(Attack):
    """Segment attack: fillers from the targets' segment (items sharing a category with a target, e.g.
    an ML genre), ``segment_share`` of the slots; the rest, and any shortfall, uniformly from other items.

    Example::

        attack = create_attack("segment", segment_share=1.0)
        fake = attack.craft(ctx)
    """

    description = "Fake users whose fillers share a category with the targets"
    paper = "Mobasher et al., ACM TOIT 2007"

    Config = SegmentConfig

    def craft(self, ctx: AttackContext, surrogate=None) -> torch.Tensor:
        if ctx.item_categories is None:
            raise ValueError("segment: the dataset has no item categories (item_attributes table); use another attack")
        cats = {c for t in ctx.targets for c in ctx.item_categories[t]}
        in_segment = np.array([bool(cats.intersection(c)) for c in ctx.item_categories])
        in_segment[ctx.targets] = False
        n_seg = min(
            int(round(self.config.segment_share * (ctx.budget.n_filler - len(ctx.targets)))), int(in_segment.sum())
        )
        other = np.flatnonzero(~in_segment)
        other = other[~np.isin(other, ctx.targets)]
        return two_pool_fillers(ctx, np.random.default_rng(ctx.seed), np.flatnonzero(in_segment), n_seg, other)
