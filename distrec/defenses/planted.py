"""Fake profiles a defender plants in its own clean data: the labelled examples a supervised or seeded
detector learns from, so that it never needs the attacker's profiles (docs/methods.md section 2b: training
and testing on one attack file leaks labels)."""

from __future__ import annotations

import numpy as np

from distrec.attacks.base import AttackContext
from distrec.attacks.budget import Budget
from distrec.attacks.registry import create_attack
from distrec.data.matrix import UserItemCSR

PLANTABLE = ("random", "bandwagon", "popular")


def planted_profiles(
    train: UserItemCSR, attacks: list[str], sizes: list[float], n_targets: int, seed: int
) -> UserItemCSR:
    """Rows of fake users crafted on ``train`` by each heuristic attack in ``attacks`` at each size in
    ``sizes`` (a share of ``train``'s users), each promoting ``n_targets`` items the defender draws at random,
    with the real users' mean degree as profile size."""
    rng = np.random.default_rng(seed)
    degrees = train.degrees()
    n_filler = max(n_targets, int(round(degrees[degrees > 0].mean())))
    rows: list[np.ndarray] = []
    for k, name in enumerate(attacks):
        for j, size in enumerate(sizes):
            targets = rng.choice(train.n_items, n_targets, replace=False)
            ctx = AttackContext(
                train,
                targets,
                Budget(max(1, int(round(size * train.n_users))), n_filler),
                seed=seed + 31 * k + j,
                progress=False,
            )
            rows += [np.flatnonzero(r) for r in create_attack(name).craft(ctx).numpy()]
    users = np.repeat(np.arange(len(rows)), [len(r) for r in rows])
    return UserItemCSR.from_arrays(users, np.concatenate(rows), len(rows), train.n_items)


def stacked(top: UserItemCSR, bottom: UserItemCSR) -> UserItemCSR:
    """``top``'s users followed by ``bottom``'s (same items)."""
    return UserItemCSR(
        np.concatenate([top.indptr, bottom.indptr[1:] + top.indptr[-1]]),
        np.concatenate([top.indices, bottom.indices]),
        top.n_items,
    )
