"""The item-image encoder of the visually-aware victims: a timm backbone with a feature head
(:class:`~distrec.models.embedding.TimmEmbedder`), pre-trained here to predict the items' categories
(ML genres) from their images, since no pretrained weights can be downloaded; a user's own timm
checkpoint can be given instead (``checkpoint``)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from distrec.data.item_images import ItemImages
from distrec.models.embedding import TimmEmbedder, create_embedder


@dataclass
class GenreEncoderConfig:
    backbone: str = "resnet18"
    feature_dim: int = 64
    checkpoint: str | None = None
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 128
    holdout: float = 0.1
    seed: int = 0


def multi_hot(categories: list[list[int]], n_categories: int) -> torch.Tensor:
    out = torch.zeros(len(categories), n_categories)
    for i, cats in enumerate(categories):
        out[i, cats] = 1.0
    return out


def pretrain_genre_encoder(
    images: ItemImages, categories: list[list[int]], config: GenreEncoderConfig, progress: bool = True
) -> tuple[TimmEmbedder, dict]:
    """Multi-label genre classification (BCE) on the items that have an image and a category; a held-out
    ``holdout`` share of them measures it: top-1 precision (the best-scored genre is one of the item's)
    against always answering the most frequent genre."""
    n_categories = 1 + max((c for cats in categories for c in cats), default=0)
    labels = multi_hot(categories, n_categories)
    usable = (images.has_image & (labels.sum(1) > 0)).nonzero().squeeze(1)
    g = torch.Generator().manual_seed(config.seed)
    usable = usable[torch.randperm(len(usable), generator=g)]
    n_hold = int(len(usable) * config.holdout)
    hold, train = usable[:n_hold], usable[n_hold:]
    torch.manual_seed(config.seed)
    encoder = create_embedder(
        "timm",
        backbone=config.backbone,
        metric="euclidean",
        embed_dim=config.feature_dim,
        in_chans=3,
        checkpoint=config.checkpoint,
    )
    head = torch.nn.Linear(config.feature_dim, n_categories)
    params = list(encoder.parameters()) + list(head.parameters())
    optimizer = torch.optim.Adam(params, lr=config.lr)
    history = []
    bar = tqdm(total=config.epochs, desc="genre encoder", unit="epoch", disable=not progress)
    for epoch in range(config.epochs):
        t0, total = time.perf_counter(), 0.0
        encoder.train()
        order = train[torch.randperm(len(train), generator=g)]
        for s in range(0, len(order), config.batch_size):
            rows = order[s : s + config.batch_size]
            loss = F.binary_cross_entropy_with_logits(head(F.relu(encoder(images.floats(rows)))), labels[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(rows)
        history.append({"epoch": epoch, "loss": total / max(1, len(train)), "seconds": time.perf_counter() - t0})
        bar.update()
        bar.set_postfix(loss=f"{history[-1]['loss']:.4f}")
    bar.close()
    encoder.eval()
    with torch.no_grad():
        logits = head(F.relu(encoder(images.floats(hold)))) if len(hold) else torch.zeros(0, n_categories)
    top1 = labels[hold].gather(1, logits.argmax(1, keepdim=True)).mean().item() if len(hold) else float("nan")
    majority = labels[train].sum(0).argmax()
    baseline = labels[hold, majority].mean().item() if len(hold) else float("nan")
    report = {
        "train_items": len(train),
        "holdout_items": len(hold),
        "holdout_top1_precision": top1,
        "majority_baseline": baseline,
        "history": history,
    }
    return encoder, report
