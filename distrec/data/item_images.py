"""Item images (e.g. ML-1M posters) as one uint8 tensor indexed by internal item id, decoded and resized
through Ray Data (``image_dataset``) or in process; both give the same pixels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from distrec.data.dataset import PreparedDataset
from distrec.data.errors import DataFormatError
from distrec.data.streaming import decode_images, image_dataset


@dataclass
class ItemImages:
    """``pixels`` uint8 ``[n_items, C, S, S]`` (zeros where an item has no image); ``has_image`` bool."""

    pixels: torch.Tensor
    has_image: torch.Tensor

    def __len__(self) -> int:
        return len(self.pixels)

    def floats(self, items: torch.Tensor | slice | None = None) -> torch.Tensor:
        x = self.pixels if items is None else self.pixels[items]
        return x.float().div_(255.0)

    @property
    def size(self) -> int:
        return self.pixels.shape[-1]


def load_item_images(
    dataset: PreparedDataset | str, size: int, backend: str = "auto", batch_size: int = 256
) -> ItemImages:
    """Decode the ``item_images`` table at ``size`` x ``size`` RGB. ``backend``: ``ray`` (Ray Data
    ``map_batches``), ``memory``, or ``auto`` (Ray in a driver where Ray is initialised; in process inside
    a Ray task or actor, whose CPUs Ray Data's own tasks would otherwise wait for)."""
    import ray

    dataset = dataset if isinstance(dataset, PreparedDataset) else PreparedDataset(dataset)
    if not dataset.has("item_images"):
        raise DataFormatError(
            dataset.uri, "no item_images table: prepare the dataset with --images (e.g. the ML-1M posters tar)"
        )
    if backend == "auto":
        backend = (
            "ray" if ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.SCRIPT_MODE else "memory"
        )
    if backend == "ray":
        batches = image_dataset(dataset, size=size).iter_batches(batch_size=batch_size, batch_format="numpy")
    elif backend == "memory":
        table = dataset.table("item_images", ["item_id", "image"])
        batches = (
            decode_images({"item_id": b.column("item_id").to_numpy(), "image": b.column("image").to_pylist()}, size)
            for b in table.to_batches(batch_size)
        )
    else:
        raise ValueError(f"backend must be ray, memory or auto, got {backend!r}")
    pixels = torch.zeros(dataset.n_items, 3, size, size, dtype=torch.uint8)
    has_image = torch.zeros(dataset.n_items, dtype=torch.bool)
    for batch in batches:
        items = torch.from_numpy(np.array(batch["item_id"], np.int64))
        pixels[items] = torch.from_numpy(np.array(batch["pixels"], np.uint8)).permute(0, 3, 1, 2)
        has_image[items] = True
    return ItemImages(pixels, has_image)
