"""Row gathers on the training hot paths."""

from __future__ import annotations

import torch


def take_rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for an integer ``index`` of any shape (result ``[*index.shape, d]``), through
    ``index_select``: its backward is an ``index_add``, about 3x faster on CPU than the ``index_put``
    that advanced indexing's backward runs (docs/benchmarks.md, "Row gathers")."""
    return table.index_select(0, index.reshape(-1)).reshape(*index.shape, *table.shape[1:])
