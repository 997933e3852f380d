"""Fake profiles: a binary ``[n_fake, n_items]`` matrix, its projection onto the budget, and its import
from another tool's list of profiles in original ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from distrec.attacks.budget import Budget
from distrec.data.errors import DataFormatError


def project_profiles(values: torch.Tensor, targets: np.ndarray, n_filler: int) -> torch.Tensor:
    """Top-filler projection (RevAdv, docs/methods.md section 2): every row keeps all ``targets`` and its
    ``n_filler - len(targets)`` highest other entries as 1s; everything else becomes 0. Ties break by
    item id, so the projection is deterministic."""
    targets_t = torch.as_tensor(targets, device=values.device)
    ranked = values.detach().clone().float()
    ranked[:, targets_t] = -torch.inf
    out = torch.zeros_like(ranked)
    k = n_filler - len(targets)
    if k > 0:
        out.scatter_(1, torch.topk(ranked, k, dim=1, sorted=False).indices, 1.0)
    out[:, targets_t] = 1.0
    return out


def check_budget(fake: torch.Tensor, budget: Budget, targets: np.ndarray) -> None:
    """Raise unless ``fake`` is binary, has at most ``budget.n_fake`` rows of at most ``budget.n_filler``
    items each, and every row holds every target."""
    if not bool(((fake == 0) | (fake == 1)).all()):
        raise ValueError("fake profiles must be binary")
    if fake.shape[0] > budget.n_fake:
        raise ValueError(f"{fake.shape[0]} fake users exceed the budget n_fake={budget.n_fake}")
    sizes = fake.sum(1)
    if bool((sizes > budget.n_filler).any()):
        raise ValueError(f"a fake user has {int(sizes.max())} interactions, over the budget n_filler={budget.n_filler}")
    if len(targets) and not bool(fake[:, torch.as_tensor(targets)].all()):
        raise ValueError("every fake profile must hold every target item")


def profile_rows(fake: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``(fake_row, item)`` of every 1 in ``fake``, row-major."""
    rows, items = torch.nonzero(fake.cpu() > 0, as_tuple=True)
    return rows.numpy().astype(np.int64), items.numpy().astype(np.int64)


def read_profiles(path: str | Path, item_map: pa.Table) -> list[np.ndarray]:
    """Read fake profiles exported by another tool: one fake user per line, its items as original item
    ids separated by spaces, commas or tabs; ``#`` starts a comment. Returns internal item ids per
    profile. An id the dataset does not know is an error naming the file, line and column."""
    original = item_map.column("original")
    numeric = pa.types.is_integer(original.type)
    profiles = []
    text = Path(path).read_text(encoding="utf-8")
    for lineno, line in enumerate(text.splitlines(), 1):
        body = line.split("#", 1)[0]
        tokens, cols, pos = [], [], 0
        for tok in body.replace(",", " ").replace("\t", " ").split(" "):
            if tok:
                tokens.append(tok)
                cols.append(pos + 1)
            pos += len(tok) + 1
        if not tokens:
            continue
        if numeric:
            try:
                keys = pa.array([int(t) for t in tokens], original.type)
            except ValueError:
                bad = next(i for i, t in enumerate(tokens) if not t.lstrip("-").isdigit())
                raise DataFormatError(path, f"item id {tokens[bad]!r} is not an integer", lineno, cols[bad]) from None
        else:
            keys = pa.array(tokens, original.type)
        pos_in_map = pc.index_in(keys, value_set=original).fill_null(-1).to_numpy()
        missing = np.flatnonzero(pos_in_map < 0)
        if len(missing):
            i = int(missing[0])
            raise DataFormatError(path, f"item {tokens[i]!r} is not in the dataset's item map", lineno, cols[i])
        internal = item_map.column("internal").to_numpy()[pos_in_map]
        profiles.append(np.unique(internal))
    if not profiles:
        raise ValueError(f"{path}: no fake profiles found")
    return profiles
