"""The ViT defense for item images (methods.md section 3, after Yin et al., arXiv 2306.07992):

- a purifier: a timm vision transformer over the image's patches with a linear patch decoder, trained
  to map perturbed and randomly masked images back to the clean ones (masked-autoencoder style);
- a detector: a projection of the class token of a transformer that reads the image's high-pass residual
  (or the image, or the purifier's residual: ``detector_input``), trained with a supervised contrastive loss
  (Khosla et al. 2020, eq. 2) that pulls clean images together and pushes adversarial ones away; an image
  is flagged when its cosine distance to the clean centroid exceeds a threshold calibrated on held-out
  clean images at a chosen false-positive rate.

With ``joint`` both heads share one transformer and are trained on the sum of the losses; otherwise each
has its own. Deployed as a filter (purify every image), a detector (reject flagged uploads: the item
keeps its previous image), or both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import timm
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from distrec.defenses.filters import median_filter
from distrec.defenses.registry import Defense, register_defense

DETECTOR_INPUTS = ("image", "highpass", "purifier_residual")


@dataclass
class ViTDefenseConfig:
    img_size: int = 64
    patch_size: int = 8
    depth: int = 4
    model: str = "vit_tiny_patch16_224"
    detector_dim: int = 64
    mask_ratio: float = 0.25
    eval_mask_ratio: float = 0.0
    detector_input: str = "highpass"
    residual_scale: float = 8.0
    temperature: float = 0.1
    detector_weight: float = 1.0
    joint: bool = True
    target_fpr: float = 0.05
    epochs: int = 20
    lr: float = 3e-4
    batch_size: int = 64
    seed: int = 0


def mask_patches(x: torch.Tensor, patch: int, ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero a random ``ratio`` of the ``patch`` x ``patch`` patches of each image."""
    if ratio <= 0:
        return x
    b, _, h, w = x.shape
    keep = (torch.rand(b, 1, h // patch, w // patch, generator=generator) >= ratio).to(x)
    return x * keep.repeat_interleave(patch, 2).repeat_interleave(patch, 3)


def supervised_contrastive(z: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """SupCon (Khosla et al. 2020, eq. 2) over L2-normalised ``z``: for each anchor, the mean log-probability
    of its same-label samples among all others."""
    sim = z @ z.T / temperature
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    log_prob = sim - torch.logsumexp(sim.masked_fill(eye, -float("inf")), dim=1, keepdim=True)
    positive = (labels[:, None] == labels[None, :]) & ~eye
    return -((log_prob * positive).sum(1) / positive.sum(1).clamp_min(1)).mean()


class _ViTBody(nn.Module):
    def __init__(self, c: ViTDefenseConfig):
        super().__init__()
        self.vit = timm.create_model(c.model, pretrained=False, img_size=c.img_size, patch_size=c.patch_size, depth=c.depth, num_classes=0)
        self.prefix = self.vit.num_prefix_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit.forward_features(x)  # [B, prefix + patches, D]


class ViTDefense(nn.Module):
    def __init__(self, config: ViTDefenseConfig | None = None, **kw):
        super().__init__()
        self.config = c = config or ViTDefenseConfig(**kw)
        if c.detector_input not in DETECTOR_INPUTS:
            raise ValueError(f"vit.detector_input must be one of {DETECTOR_INPUTS}, got {c.detector_input!r}")
        self.purifier_body = _ViTBody(c)
        self.detector_body = self.purifier_body if c.joint else _ViTBody(c)
        dim = self.purifier_body.vit.embed_dim
        self.decoder = nn.Linear(dim, c.patch_size**2 * 3)
        nn.init.zeros_(self.decoder.weight)  # the purifier starts as the identity and learns corrections
        nn.init.zeros_(self.decoder.bias)
        self.projector = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, c.detector_dim))
        self.register_buffer("clean_centroid", torch.zeros(c.detector_dim))
        self.register_buffer("threshold", torch.tensor(float("inf")))

    def purify(self, x: torch.Tensor, mask_ratio: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """The reconstructed image: the masked input plus the decoded per-patch correction."""
        c = self.config
        masked = mask_patches(x, c.patch_size, c.eval_mask_ratio if mask_ratio is None else mask_ratio, generator)
        tokens = self.purifier_body(masked)[:, self.purifier_body.prefix :]
        b, n = tokens.shape[:2]
        side, p = c.img_size // c.patch_size, c.patch_size
        patches = self.decoder(tokens).view(b, side, side, 3, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, 3, c.img_size, c.img_size)
        return (masked + patches).clamp(0, 1)

    forward = purify

    def detector_view(self, x: torch.Tensor) -> torch.Tensor:
        """What the detector looks at: the image, its high-pass residual x - median3(x), or the purifier's
        residual x - purify(x), both scaled by ``residual_scale`` around 0.5 (perturbations of a few /255
        are high-frequency; the image content mostly is not)."""
        mode = self.config.detector_input
        if mode == "image":
            return x
        smooth = median_filter(x, 3) if mode == "highpass" else self.purify(x, 0.0).detach()
        return (0.5 + self.config.residual_scale * (x - smooth)).clamp(0, 1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projector(self.detector_body(self.detector_view(x))[:, 0]), dim=1)

    @torch.no_grad()
    def detection_score(self, x: torch.Tensor) -> torch.Tensor:
        """Cosine distance of the image's embedding to the clean centroid (higher = more suspicious)."""
        return 1 - self.embed(x) @ self.clean_centroid

    @torch.no_grad()
    def flag(self, x: torch.Tensor) -> torch.Tensor:
        return self.detection_score(x) > self.threshold

    @torch.no_grad()
    def calibrate(self, clean_train: torch.Tensor, clean_holdout: torch.Tensor) -> float:
        """Centroid from training clean images; threshold = the (1 - target_fpr) quantile of held-out clean scores."""
        self.clean_centroid.copy_(F.normalize(self.embed(clean_train).mean(0), dim=0))
        self.threshold.copy_(torch.quantile(self.detection_score(clean_holdout), 1 - self.config.target_fpr))
        return float(self.threshold)


def train_vit_defense(defense: ViTDefense, clean: torch.Tensor, adversarial: torch.Tensor, progress: bool = True) -> list[dict]:
    """Train on paired clean / adversarial images (float ``[N, 3, S, S]``): reconstruction of the clean
    image from both (masked), plus the contrastive detector loss; the last 10% of the pairs calibrate."""
    c = defense.config
    g = torch.Generator().manual_seed(c.seed)
    torch.manual_seed(c.seed)
    n_hold = max(1, len(clean) // 10)
    order = torch.randperm(len(clean), generator=g)
    hold, train = order[:n_hold], order[n_hold:]
    optimizer = torch.optim.AdamW(defense.parameters(), lr=c.lr, weight_decay=0.05)
    history = []
    for epoch in tqdm(range(c.epochs), desc="vit defense", unit="epoch", disable=not progress):
        t0, totals = time.perf_counter(), {"reconstruction": 0.0, "contrastive": 0.0}
        defense.train()
        train = train[torch.randperm(len(train), generator=g)]
        for s in range(0, len(train), c.batch_size):
            rows = train[s : s + c.batch_size]
            x_clean, x_adv = clean[rows], adversarial[rows]
            both = torch.cat([x_clean, x_adv])
            rec = F.mse_loss(defense.purify(both, c.mask_ratio, g), torch.cat([x_clean, x_clean]))
            labels = torch.cat([torch.zeros(len(rows)), torch.ones(len(rows))]).long()
            con = supervised_contrastive(defense.embed(both), labels, c.temperature)
            optimizer.zero_grad(set_to_none=True)
            (rec + c.detector_weight * con).backward()
            optimizer.step()
            totals["reconstruction"] += rec.item() * len(rows)
            totals["contrastive"] += con.item() * len(rows)
        history.append({"epoch": epoch, **{k: v / len(train) for k, v in totals.items()}, "seconds": time.perf_counter() - t0})
    defense.eval()
    defense.calibrate(clean[train], clean[hold])
    return history


@dataclass
class DeployedViTConfig:
    """No keys of its own: the ViT is trained once per study from the study's ``vit`` settings."""


VIT_DEPLOYMENTS = {"vit_filter": (True, False), "vit_detector": (False, True), "vit_filter_detector": (True, True)}


class DeployedViT(Defense):
    """The ViT defense deployed as a filter (purify every image), a detector (reject flagged uploads)
    or both; ``filter`` and ``detector`` say which."""

    kind = "deployment"
    Config = DeployedViTConfig
    filter = detector = False

    @classmethod
    def supports(cls, victim_cls: type) -> bool:
        from distrec.models.visual import VisualVictim

        return issubclass(victim_cls, VisualVictim)

    def apply(self, victim):
        raise TypeError(f"{self.name} is deployed with a trained ViTDefense (the study trains it), not applied to a victim")


for _name, (_filter, _detector) in VIT_DEPLOYMENTS.items():
    register_defense(_name)(type(f"ViT{_name.title().replace('_', '')}", (DeployedViT,), {"filter": _filter, "detector": _detector}))
