"""Training an embedding network with the triplet loss, optionally on adversarial examples (a defense)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from distrec.data.labeled_images import LabeledImages
from distrec.models.embedding import Embedder
from distrec.models.triplet import DEFAULT_MARGIN, triplet_loss


@dataclass
class TripletTrainingConfig:
    """AdvRank's MNIST settings by default: Adam lr 1e-3, batch 1000, 30 epochs; ``margin`` None = 0.2
    (cosine) or 1.0 (Euclidean)."""

    epochs: int = 30
    batch_size: int = 1000
    lr: float = 1e-3
    margin: float | None = None
    seed: int = 0


def fit_embedder(
    model: Embedder,
    data: LabeledImages,
    config: TripletTrainingConfig,
    perturb: Callable[[Embedder, torch.Tensor], torch.Tensor] | None = None,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Train ``model`` in place; ``perturb(model, x)`` replaces each batch by adversarial examples
    (e.g. :meth:`EmbeddingShiftingTraining.perturb`). Returns one record per epoch (loss, seconds)."""
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    margin = DEFAULT_MARGIN[model.metric] if config.margin is None else config.margin
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    history = []
    n_batches = (len(data) + config.batch_size - 1) // config.batch_size
    bar = tqdm(total=config.epochs * n_batches, desc=f"train {model.name}", unit="batch", disable=not progress)
    for epoch in range(config.epochs):
        t0, total = time.perf_counter(), 0.0
        order = torch.randperm(len(data), generator=generator)
        model.train()
        for start in range(0, len(data), config.batch_size):
            rows = order[start : start + config.batch_size]
            x, y = data.floats(rows).to(device), data.labels[rows].to(device)
            if perturb is not None:
                x = perturb(model, x)
            loss = triplet_loss(model(x), y, model.metric, margin, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(rows)
            bar.update()
            bar.set_postfix(epoch=epoch, loss=f"{loss.item():.4f}")
        record = {"epoch": epoch, "loss": total / len(data), "seconds": time.perf_counter() - t0}
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    bar.close()
    return history
