"""Input-transformation baselines against image attacks: JPEG compression, bit-depth reduction and the
median filter (Xu et al. 2018 "feature squeezing"; Guo et al. 2018). Pixels in [0, 1], ``[B, C, H, W]``.
None is differentiable; an adaptive attacker goes through them with BPDA
(:func:`distrec.attacks.item_image.straight_through`)."""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pydantic import Field
from torch import nn

from distrec.config import AtLeastOne
from distrec.defenses.registry import DeploymentDefense, register_defense


def median_filter(x: torch.Tensor, kernel: int = 3) -> torch.Tensor:
    """k x k median of each pixel's neighbourhood (reflect padding)."""
    b, c, h, w = x.shape
    padded = F.pad(x, (kernel // 2,) * 4, mode="reflect")
    return F.unfold(padded, kernel).view(b, c, kernel * kernel, h * w).median(dim=2).values.view(b, c, h, w)


class JPEGFilter(nn.Module):
    """JPEG compression and decompression at ``quality`` (Guo et al. 2018)."""

    def __init__(self, quality: int = 75):
        super().__init__()
        self.quality = quality

    def _roundtrip(self, image: np.ndarray) -> np.ndarray:
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=self.quality)
        buf.seek(0)
        with Image.open(buf) as im:
            return np.asarray(im.convert("RGB"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hwc = (x.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        decoded = np.stack([self._roundtrip(img) for img in hwc])
        return torch.from_numpy(decoded).permute(0, 3, 1, 2).to(x.device, x.dtype) / 255.0


class BitDepthFilter(nn.Module):
    """Each channel rounded to ``bits`` bits (Xu et al. 2018, feature squeezing)."""

    def __init__(self, bits: int = 4):
        super().__init__()
        self.levels = 2**bits - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * self.levels) / self.levels


class MedianFilter(nn.Module):
    """The ``kernel`` x ``kernel`` median filter (Xu et al. 2018, spatial smoothing)."""

    def __init__(self, kernel: int = 3):
        super().__init__()
        self.kernel = kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return median_filter(x, self.kernel)


FILTERS = {"jpeg": JPEGFilter, "bit_depth": BitDepthFilter, "median": MedianFilter}


@dataclass
class JPEGConfig:
    quality: Annotated[int, Field(ge=1, le=95)] = 75


@dataclass
class BitDepthConfig:
    bits: Annotated[int, Field(ge=1, le=8)] = 4


@dataclass
class MedianConfig:
    kernel: AtLeastOne = 3

    def __post_init__(self):
        if self.kernel % 2 == 0:
            raise ValueError(f"kernel must be an odd size, got {self.kernel}")


class ImageFilterDefense(DeploymentDefense):
    """An input transformation in front of a visually-aware recommender: every item image passes it."""

    module: type

    @classmethod
    def supports(cls, victim_cls: type) -> bool:
        from distrec.models.visual import VisualVictim

        return issubclass(victim_cls, VisualVictim)

    def apply(self, victim) -> nn.Module:
        return self.module(**dataclasses.asdict(self.config))


FILTER_DEFENSES = {  # name: (config, summary, paper, example keys)
    "jpeg": (JPEGConfig, "Image filter: JPEG compression and decompression", "Guo et al., ICLR 2018", "quality=75"),
    "bit_depth": (BitDepthConfig, "Image filter: each channel rounded to fewer bits", "Xu et al., NDSS 2018", "bits=4"),
    "median": (
        MedianConfig,
        "Image filter: a median over each pixel's neighbourhood",
        "Xu et al., NDSS 2018",
        "kernel=3",
    ),
}

for _name, (_config, _summary, _paper, _keys) in FILTER_DEFENSES.items():
    register_defense(_name)(
        type(
            f"{FILTERS[_name].__name__}Defense",
            (ImageFilterDefense,),
            {
                "Config": _config,
                "module": FILTERS[_name],
                "description": _summary,
                "paper": _paper,
                "__doc__": f"{FILTERS[_name].__doc__}\n\n    Example::\n\n"
                f'        purify = create_defense("{_name}", {_keys}).apply(victim)\n'
                "        scores = victim.score_items_with(users, items, victim.image_features(purify(pixels)))\n",
            },
        )
    )
