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
    k: int,
    chunk_users: int = 1024,
    device: str | torch.device = "cpu",
) -> float:
    """ARLib's HR@K: hits of the targets in every user's unmasked top-K, over users x targets."""
    targets_t = torch.as_tensor(np.asarray(targets), device=device)
    hits = 0.0
    for s in range(0, n_users, chunk_users):
        users = torch.arange(s, min(s + chunk_users, n_users), device=device)
        top = torch.topk(score_fn(users).float(), k, dim=1).indices
        hits += float((top[:, :, None] == targets_t[None, None, :]).any(1).sum())
    return hits / max(n_users * len(targets_t), 1)


@torch.no_grad()
def revadv_hit_one(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    train: UserItemCSR,
    test: UserItemCSR,
    targets: Sequence[int],
    real_users: np.ndarray,
    k: int,
    chunk_users: int = 1024,
    device: str | torch.device = "cpu",
) -> float:
    """RevAdv's HitOne@K: real users with a test item that have any target in their masked top-K."""
    users = np.asarray(real_users)
    users = users[test.degrees()[users] > 0]
    targets_t = torch.as_tensor(np.asarray(targets), device=device)
    hit = 0.0
    for s in range(0, len(users), chunk_users):
        top = masked_topk(score_fn, users[s : s + chunk_users], train, k, device)
        hit += float((top[:, :, None] == targets_t[None, None, :]).any(2).any(1).sum())
    return hit / max(len(users), 1)


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
    for k in ks:
        if "arlib" in names:
            out[PEER_NAMES["arlib"].format(k=k)] = arlib_hit_ratio(score_fn, train.n_users, targets, k, device=device)
        if "revadv" in names:
            real = np.arange(n_real)
            out[PEER_NAMES["revadv"].format(k=k)] = revadv_hit_one(
                score_fn, train, test, targets, real, k, device=device
            )
    return out
