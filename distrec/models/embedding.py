"""Embedding networks for deep metric learning (retrieval), behind one registry:
``create_embedder(name, **config)`` in the manner of timm's ``create_model``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from distrec.config import AtLeastOne, check
from distrec.files import write_local
from distrec.models.base import CheckpointError
from distrec.registry import Registry

EMBEDDERS = Registry("embedder")
register_embedder = EMBEDDERS.register
list_embedders = EMBEDDERS.names
METRICS = ("cosine", "euclidean")


class Embedder(nn.Module):
    """Maps images in [0, 1] to embeddings; ``embed`` L2-normalises them under the cosine metric.

    Subclasses define ``Config`` (a dataclass with at least ``metric`` and ``embed_dim``) and ``features``.
    """

    name = "embedder"
    Config: type

    def __init__(self, **config):
        super().__init__()
        self.config = check(self.Config, config, self.name)

    @property
    def metric(self) -> str:
        return self.config.metric

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.features(x)
        return F.normalize(z, dim=1) if self.metric == "cosine" else z

    embed = forward

    def save(self, directory: str | Path) -> Path:
        """``model.safetensors`` + ``config.json``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_local(
            directory / "model.safetensors",
            safetensors_bytes({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}),
        )
        write_local(
            directory / "config.json",
            json.dumps({"name": self.name, "config": dataclasses.asdict(self.config)}, indent=2),
        )
        return directory

    @staticmethod
    def load(directory: str | Path, device: str | torch.device = "cpu") -> Embedder:
        """Rebuild a saved embedder from safetensors + JSON (no pickle)."""
        directory = Path(directory)
        if not (directory / "config.json").exists():
            raise FileNotFoundError(
                f"{directory}: no config.json; expected a folder written by Embedder.save ('distrec rank train "
                "--out', 'distrec vars encoder --out')"
            )
        try:
            meta = json.loads((directory / "config.json").read_text())
            model = create_embedder(meta["name"], **meta["config"])
            model.load_state_dict(load_file(directory / "model.safetensors", device=str(device)))
        except Exception as exc:  # safetensors, JSON, torch and OS errors alike: the checkpoint is unusable
            raise CheckpointError.of(directory, exc) from exc
        return model.to(device).eval()


@torch.no_grad()
def embed_images(model: nn.Module, images, batch_size: int = 256) -> torch.Tensor:
    """``model`` applied in eval mode, in batches, to every image of ``images`` (a float tensor in [0, 1],
    or anything with ``floats(slice)`` and ``len``: labeled or item images), on the model's device. Plain
    tensors, not inference-mode ones, so attacks can build autograd graphs on them."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    batch = (lambda s: images[s]) if isinstance(images, torch.Tensor) else images.floats  # noqa: E731
    out = torch.cat([model(batch(slice(i, i + batch_size)).to(device)) for i in range(0, len(images), batch_size)])
    model.train(was_training)
    return out


def create_embedder(name: str, **config) -> Embedder:
    """Build embedder ``name``; unknown config keys are an error naming them."""
    return EMBEDDERS.get(name)(**config)


@register_embedder("c2f2")
class C2F2(Embedder):
    """AdvRank's "c2f2" (Zhou et al., ECCV 2020): Conv5x5(C->32, pad 2)-ReLU-MaxPool2,
    Conv5x5(32->64, pad 2)-ReLU-MaxPool2, FC -> ``embed_dim`` (1024)."""

    @dataclasses.dataclass
    class Config:
        metric: Literal[METRICS] = "cosine"
        embed_dim: AtLeastOne = 1024
        in_chans: AtLeastOne = 1
        img_size: AtLeastOne = 28

    def __init__(self, **config):
        super().__init__(**config)
        c = self.config
        if c.img_size % 4:
            raise ValueError(f"c2f2: img_size {c.img_size} must be divisible by 4 (two 2x2 poolings)")
        self.conv1 = nn.Conv2d(c.in_chans, 32, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=5, padding=2)
        self.fc = nn.Linear(64 * (c.img_size // 4) ** 2, c.embed_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


@register_embedder("timm")
class TimmEmbedder(Embedder):
    """Any timm backbone (``backbone``, e.g. ``resnet18``) with its classifier removed and a linear
    embedding head. ``checkpoint``: a local weights file for the backbone (safetensors, or a state dict
    that timm reads with ``weights_only``); nothing is downloaded."""

    @dataclasses.dataclass
    class Config:
        backbone: str = "resnet18"
        metric: Literal[METRICS] = "cosine"
        embed_dim: AtLeastOne = 512
        in_chans: AtLeastOne = 3
        checkpoint: str | None = None

    def __init__(self, **config):
        import timm

        super().__init__(**config)
        c = self.config
        kw = {"pretrained_cfg_overlay": {"file": c.checkpoint}} if c.checkpoint else {}
        self.backbone = timm.create_model(
            c.backbone, pretrained=bool(c.checkpoint), num_classes=0, in_chans=c.in_chans, **kw
        )
        self.head = nn.Linear(self.backbone.num_features, c.embed_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))
