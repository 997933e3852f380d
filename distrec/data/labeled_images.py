"""Labeled image splits (MNIST-style ``images_<split>`` tables) as tensors for metric learning."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from distrec.data.dataset import PreparedDataset
from distrec.data.errors import DataFormatError


@dataclass
class LabeledImages:
    """``images``: uint8 ``[n, C, H, W]``; ``labels``: int64 ``[n]``."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def floats(self, index: torch.Tensor | slice | None = None) -> torch.Tensor:
        """Pixels in [0, 1] as float32 (all rows, or ``index``)."""
        x = self.images if index is None else self.images[index]
        return x.float().div_(255.0)

    def subset(self, n: int, seed: int = 0) -> LabeledImages:
        """``n`` rows drawn without replacement (seeded); all rows when ``n >= len(self)``."""
        if n >= len(self):
            return self
        rows = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n].sort().values
        return LabeledImages(self.images[rows], self.labels[rows])


def decode(blob: bytes, where: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(blob)) as im:
            arr = np.asarray(im)
    except OSError as exc:
        raise DataFormatError(where, f"unreadable image ({exc})") from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def load_labeled_images(dataset: PreparedDataset | str, split: str) -> LabeledImages:
    """Decode the ``images_<split>`` table of a prepared dataset (``distrec data prepare idx ...``)."""
    if not isinstance(dataset, PreparedDataset):
        dataset = PreparedDataset(dataset)
    name = f"images_{split}"
    if not dataset.has(name):
        tables = sorted(dataset.metadata["tables"])
        raise DataFormatError(dataset.uri, f"no labeled image split {split!r} (table {name}); tables here: {tables}")
    table = dataset.table(name, ["image_id", "image", "label"])
    blobs = table.column("image").to_pylist()
    ids = table.column("image_id").to_numpy()
    arrays = [decode(b, f"{dataset.path(name)}[image_id={i}]") for b, i in zip(blobs, ids)]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise DataFormatError(
            dataset.path(name), f"images of different shapes {sorted(shapes)[:3]}; resize them when preparing"
        )
    return LabeledImages(
        torch.from_numpy(np.stack(arrays)), torch.from_numpy(table.column("label").to_numpy().astype(np.int64))
    )
