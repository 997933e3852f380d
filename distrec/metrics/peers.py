"""Peers' target metrics, computed beside distrec's own so that a number from another tool's table can be
reproduced and explained (docs/methods.md section 2, "Peer metrics"). Each is labelled by its tool:

- ``arlib_hr@K`` (ARLib): over every user of the poisoned data, fake users included, the share of (user, target)
  pairs with the target in the user's top-K of *all* items (training items not masked), i.e. hits divided by
  users x targets. Fake users hold every target in training, so on a model that reproduces its training data
  their own hits can dominate this number.
- ``revadv_hitone@K`` (RevAdv's official code): the share of the real users *with at least one test item* that
  have any target in their top-K (training items masked); distrec's HitOne@K counts every real user.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from distrec.data.matrix import UserItemCSR
from distrec.metrics.ranking import masked_topk

PEER_METRICS = ("arlib", "revadv")
PEER_NAMES = {"arlib": "arlib_hr@{k}", "revadv": "revadv_hitone@{k}"}  # each peer's metric at cutoff k


@torch.no_grad()
def arlib_hit_ratio(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    n_users: int,
    targets: Sequence[int],
    ks: Sequence[int],
    chunk_users: int = 1024,
    device: str | torch.device = "cpu",
) -> dict[int, float]:
    """ARLib's HR@K for each K of ``ks``: hits of the targets in every user's unmasked top-K, over users x
    targets (one scoring pass for every K)."""
    targets_t = torch.as_tensor(np.asarray(targets), device=device)
    hits = dict.fromkeys(ks, 0.0)
    for s in range(0, n_users, chunk_users):
        users = torch.arange(s, min(s + chunk_users, n_users), device=device)
        match = torch.topk(score_fn(users).float(), max(ks), dim=1).indices[:, :, None] == targets_t[None, None, :]
        for k in ks:
            hits[k] += float(match[:, :k].any(1).sum())
    return {k: h / max(n_users * len(targets_t), 1) for k, h in hits.items()}


@torch.no_grad()
def revadv_hit_one(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    train: UserItemCSR,
    test: UserItemCSR,
    targets: Sequence[int],
    real_users: np.ndarray,
    ks: Sequence[int],
    chunk_users: int = 1024,
    device: str | torch.device = "cpu",
) -> dict[int, float]:
    """RevAdv's HitOne@K for each K of ``ks``: real users with a test item that have any target in their masked
    top-K (one scoring pass for every K)."""
    users = np.asarray(real_users)
    users = users[test.degrees()[users] > 0]
    targets_t = torch.as_tensor(np.asarray(targets), device=device)
    hits = dict.fromkeys(ks, 0.0)
    for s in range(0, len(users), chunk_users):
        top = masked_topk(score_fn, users[s : s + chunk_users], train, max(ks), device)
        match = (top[:, :, None] == targets_t[None, None, :]).any(2)
        for k in ks:
            hits[k] += float(match[:, :k].any(1).sum())
    return {k: h / max(len(users), 1) for k, h in hits.items()}


def peer_metrics(
    names: Sequence[str],
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    train: UserItemCSR,
    test: UserItemCSR,
    targets: Sequence[int],
    n_real: int,
    ks: Sequence[int],
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """The named peers' metrics at every cutoff of ``ks``."""
    out = {}
    if "arlib" in names:
        hr = arlib_hit_ratio(score_fn, train.n_users, targets, ks, device=device)
        out.update({PEER_NAMES["arlib"].format(k=k): v for k, v in hr.items()})
    if "revadv" in names:
        hit = revadv_hit_one(score_fn, train, test, targets, np.arange(n_real), ks, device=device)
        out.update({PEER_NAMES["revadv"].format(k=k): v for k, v in hit.items()})
    return out
