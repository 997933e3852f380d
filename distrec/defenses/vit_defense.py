"""The ViT defense for item images (docs/methods.md section 3, after Yin et al., arXiv 2306.07992: "a global
vision transformer" that reconstructs the item image, and "a detector trained with a contrastive loss"):

- a purifier that cannot learn the identity: a masked autoencoder (He et al. 2022) whose timm ViT encoder
  sees only a ``1 - mask_ratio`` share of the patches and whose small transformer decoder predicts the
  rest. An image is purified in ``ceil(1 / (1 - mask_ratio))`` passes over disjoint visible sets, and every
  output patch is the mean of the passes in which it was hidden, so no pixel is copied through: a local
  perturbation reaches the output only through what the other patches let the model infer. Trained on
  clean images and on adversarial ones crafted on the fly against the victim (several eps, both goals),
  with a pixel loss to the clean image plus a loss on the frozen recommender encoder's features (the
  purified image should look clean *to the recommender*);
- a detector: a projection of the mean patch token of a transformer that reads the image's high-pass residual
  (or the image: ``detector_input``), trained with a supervised contrastive loss (Khosla et al. 2020,
  eq. 2) on batches of balanced clean / adversarial pairs; the embeddings' spread is recorded every epoch
  (a collapsed objective shows as a spread near 0). Beside it, a linear clean / adversarial head on the
  same token (binary cross-entropy, ``classifier_weight``) anchors the embedding with the labels; with
  the head, an image's score is its logit, else its cosine distance to the clean centroid; it is flagged
  when the score exceeds a threshold calibrated on held-out clean images at ``target_fpr``. After the
  adversarial epochs, ``detector_epochs`` train the detector alone on the adversarial images of the last
  ``pool_epochs`` epochs (one drawn per image and epoch; the purifier frozen, random flips): crafting them is
  what an epoch costs, reusing them is cheap. The detector kept is that of the detector epoch with the best
  held-out AUC (model selection on the validation items, which never enter training).

With ``joint`` the detector reads through the purifier's encoder and both are trained on the sum of the
losses; otherwise each has its own. Deployed as a filter (purify every image), a detector (reject flagged
uploads: the item keeps its previous image), or both.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal

import pydantic
import timm
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn
from tqdm.auto import tqdm

from distrec.config import AtLeastOne, Positive, Share, check
from distrec.defenses.filters import median_filter
from distrec.defenses.registry import DeploymentDefense, register_defense

DETECTOR_INPUTS = ("image", "highpass")
# numerators over 255 in (0, 255], at least one
EpsOver255 = Annotated[tuple[Annotated[int, pydantic.Field(gt=0, le=255)], ...], pydantic.Field(min_length=1)]


@dataclass
class ViTDefenseConfig:
    """``mask_ratio``: share of patches hidden from the encoder in each pass (MAE: 0.75), rounded up to
    1 - 1/k for the k = ``passes`` disjoint visible sets (0.5: 2 passes, 0.75: 4);
    ``random_partition``: draw the passes' visible sets per call at inference (a randomised defense,
    attacked with EOT) instead of one fixed, seeded partition; ``feature_weight``: weight of the
    frozen-encoder feature loss; ``train_eps`` / ``attack_steps``: the on-the-fly PGD (eps over 255);
    ``detector_input``: ``highpass`` (x - median3(x), times ``residual_scale``) or ``image``;
    ``pretrain_epochs``: MAE epochs on clean images alone (pixel loss, no attack: cheap) before the
    ``epochs`` of adversarial training; ``detector_epochs``: then the detector alone on the images of
    the last ``pool_epochs`` adversarial epochs, at ``detector_lr`` (default ``lr``);
    ``classifier_weight``: weight of the linear head's loss (0: no head)."""

    img_size: int = 64
    patch_size: int = 8
    depth: int = 4
    model: str = "vit_tiny_patch16_224"
    mask_ratio: Share = 0.75
    random_partition: bool = False
    decoder_dim: int = 128
    decoder_depth: int = 2
    feature_weight: float = 1.0
    train_eps: EpsOver255 = (2, 4, 8, 16)
    attack_steps: int = 5
    detector_depth: int = 4
    detector_dim: int = 64
    detector_input: Literal[DETECTOR_INPUTS] = "highpass"
    residual_scale: float = 8.0
    temperature: float = 0.2
    detector_weight: float = 1.0
    classifier_weight: float = 1.0
    detector_epochs: int = 0
    detector_lr: Positive | None = None
    pool_epochs: AtLeastOne = 1
    joint: bool = False
    target_fpr: float = 0.05
    pretrain_epochs: int = 0
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self):
        self.train_eps = tuple(self.train_eps)
        if self.img_size % self.patch_size:
            raise ValueError(f"vit.patch_size {self.patch_size} does not divide img_size {self.img_size}")

    @property
    def passes(self) -> int:
        return math.ceil(1 / (1 - self.mask_ratio) - 1e-9)


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """[B, 3, H, W] -> [B, (H/p)(W/p), 3 p p], patches in raster order (the ViT's token order)."""
    b, c, h, w = x.shape
    return x.view(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // p) * (w // p), c * p * p)


def unpatchify(patches: torch.Tensor, p: int, side: int) -> torch.Tensor:
    b = patches.shape[0]
    return patches.view(b, side, side, 3, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, 3, side * p, side * p)


def partition(n_patches: int, passes: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``passes`` disjoint visible sets covering the patches, as a [passes, n_patches] bool mask."""
    order = torch.randperm(n_patches, generator=generator)
    visible = torch.zeros(passes, n_patches, dtype=torch.bool)
    for k, chunk in enumerate(order.chunk(passes)):
        visible[k, chunk] = True
    return visible


def supervised_contrastive(z: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """SupCon (Khosla et al. 2020, eq. 2) over L2-normalised ``z``: for each anchor, the mean log-probability
    of its same-label samples among all others."""
    sim = z @ z.T / temperature
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    log_prob = sim - torch.logsumexp(sim.masked_fill(eye, -float("inf")), dim=1, keepdim=True)
    positive = (labels[:, None] == labels[None, :]) & ~eye
    return -((log_prob * positive).sum(1) / positive.sum(1).clamp_min(1)).mean()


def embedding_spread(z: torch.Tensor, labels: torch.Tensor) -> dict:
    """How far a contrastive objective is from collapse: the mean distance of normalised embeddings to their
    mean (0 when every image maps to one point) and the cosine distance between the two class centroids."""
    centroids = [F.normalize(z[labels == k].mean(0), dim=0) for k in (0, 1)]
    return {"spread": float((z - z.mean(0)).norm(dim=1).mean()), "separation": float(1 - centroids[0] @ centroids[1])}


class MaskedAutoencoder(nn.Module):
    """MAE (He et al. 2022): a timm ViT encoder over the visible patches, then a light transformer decoder
    over all positions (mask tokens where a patch was hidden) that predicts every patch's pixels."""

    def __init__(self, c: ViTDefenseConfig):
        super().__init__()
        self.patch_size, self.side = c.patch_size, c.img_size // c.patch_size
        self.encoder = timm.create_model(
            c.model, pretrained=False, img_size=c.img_size, patch_size=c.patch_size, depth=c.depth, num_classes=0
        )
        self.prefix = self.encoder.num_prefix_tokens
        dim = self.encoder.embed_dim
        self.to_decoder = nn.Linear(dim, c.decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.decoder_dim))
        self.decoder_pos = nn.Parameter(0.02 * torch.randn(1, self.side**2, c.decoder_dim))
        self.decoder = nn.Sequential(
            *[Block(c.decoder_dim, num_heads=4, mlp_ratio=4.0) for _ in range(c.decoder_depth)]
        )
        self.decoder_norm = nn.LayerNorm(c.decoder_dim)
        self.head = nn.Linear(c.decoder_dim, 3 * c.patch_size**2)
        nn.init.zeros_(self.head.weight)  # a mid-grey start: nothing clamped, no gradient lost
        nn.init.constant_(self.head.bias, 0.5)

    def encode(self, x: torch.Tensor, visible: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder tokens (prefix first) of the patches where ``visible`` [B, N] is true (all if None)."""
        vit = self.encoder
        tokens = vit._pos_embed(vit.patch_embed(x))
        if visible is not None:
            idx = visible.nonzero()[:, 1].view(len(x), -1)  # every row keeps the same number of patches
            patches = tokens[:, self.prefix :].gather(1, idx[..., None].expand(-1, -1, tokens.shape[-1]))
            tokens = torch.cat([tokens[:, : self.prefix], patches], 1)
        return vit.norm(vit.blocks(vit.norm_pre(tokens)))

    def forward(self, x: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """Predicted patches [B, N, 3 p p] of every position from the visible ones."""
        enc = self.to_decoder(self.encode(x, visible)[:, self.prefix :])
        full = self.mask_token.expand(len(x), visible.shape[1], -1).clone()
        full[visible] = enc.reshape(-1, enc.shape[-1])
        return self.head(self.decoder_norm(self.decoder(full + self.decoder_pos)))


class ViTDefense(nn.Module):
    def __init__(self, config: ViTDefenseConfig | None = None, **kw):
        super().__init__()
        self.config = c = config or check(ViTDefenseConfig, kw, "vit")
        torch.manual_seed(c.seed)  # the initial weights follow the config's seed, not the process's RNG state
        self.mae = MaskedAutoencoder(c)
        if c.joint:
            self.detector_body = self.mae.encoder
        else:
            self.detector_body = timm.create_model(
                c.model,
                pretrained=False,
                img_size=c.img_size,
                patch_size=c.patch_size,
                depth=c.detector_depth,
                num_classes=0,
            )
        dim = self.detector_body.embed_dim
        self.projector = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, c.detector_dim))
        self.classifier = nn.Linear(dim, 1)
        self.register_buffer("clean_centroid", torch.zeros(c.detector_dim))
        self.register_buffer("threshold", torch.tensor(float("inf")))

    def detector_parameters(self) -> list[nn.Parameter]:
        """What the detector alone trains: its body (unless ``joint``: that is the purifier's encoder), the
        projector and the linear head."""
        parts = [self.projector, self.classifier] + ([] if self.config.joint else [self.detector_body])
        return [p for m in parts for p in m.parameters()]

    def purify(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The image rebuilt patch by patch, each patch from passes in which it was hidden. The partition of
        the patches into visible sets is drawn from ``generator``; without one, a fixed seeded partition
        (or a fresh one per call under ``random_partition``) is used."""
        c, n = self.config, self.mae.side**2
        if generator is None and not c.random_partition:
            generator = torch.Generator().manual_seed(c.seed)
        visible = partition(n, c.passes, generator).to(x.device)  # [P, N]
        b = len(x)
        pred = self.mae(x.repeat(c.passes, 1, 1, 1), visible.repeat_interleave(b, 0)).view(c.passes, b, n, -1)
        hidden = (~visible).to(pred)[:, None, :, None]
        patches = (pred * hidden).sum(0) / hidden.sum(0)
        return unpatchify(patches, c.patch_size, self.mae.side).clamp(0, 1)

    forward = purify

    def detector_view(self, x: torch.Tensor) -> torch.Tensor:
        """What the detector reads: the image, or its high-pass residual x - median3(x) times
        ``residual_scale`` (perturbations of a few /255 are high-frequency; the content mostly is not)."""
        if self.config.detector_input == "image":
            return x
        return self.config.residual_scale * (x - median_filter(x, 3))

    def detector_token(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of the detector's patch tokens: a perturbation is spread over the whole image, so its
        evidence is summed over patches (the class token of a briefly trained ViT barely differs between
        images, and the contrastive objective stalls on it)."""
        return self.detector_body.forward_features(self.detector_view(x))[
            :, self.detector_body.num_prefix_tokens :
        ].mean(1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The projected, normalised detector token (the contrastive embedding)."""
        return F.normalize(self.projector(self.detector_token(x)), dim=1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Higher = more suspicious: the linear head's logit, or without it (``classifier_weight`` 0) the
        cosine distance of the embedding to the clean centroid."""
        if self.config.classifier_weight > 0:
            return self.classifier(self.detector_token(x))[:, 0]
        return 1 - self.embed(x) @ self.clean_centroid

    @torch.no_grad()
    def detection_score(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        return torch.cat([self.score(x[s : s + batch_size]) for s in range(0, len(x), batch_size)])

    @torch.no_grad()
    def flag(self, x: torch.Tensor) -> torch.Tensor:
        return self.detection_score(x) > self.threshold

    @torch.no_grad()
    def calibrate(self, clean_train: torch.Tensor, clean_holdout: torch.Tensor) -> float:
        """Centroid from training clean images; threshold = the (1 - target_fpr) quantile of held-out clean scores."""
        z = torch.cat([self.embed(clean_train[s : s + 256]) for s in range(0, len(clean_train), 256)])
        self.clean_centroid.copy_(F.normalize(z.mean(0), dim=0))
        self.threshold.copy_(torch.quantile(self.detection_score(clean_holdout), 1 - self.config.target_fpr))
        return float(self.threshold)


Adversary = Callable[[torch.Tensor, torch.Tensor, float, str], torch.Tensor]
"""(clean images, their rows in the training set, eps in pixel units, goal) -> adversarial images."""


def mann_whitney_auc(negative: torch.Tensor, positive: torch.Tensor) -> float:
    """P(a positive's score > a negative's), ties counted half (Mann-Whitney U)."""
    diff = positive[:, None] - negative[None, :]
    return float((diff > 0).float().mean() + 0.5 * (diff == 0).float().mean())


def feature_error(features: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of ``features`` to the clean images' ``clean`` features, as a share of the clean
    features' variance across images (1: as far as another image's; scale-free, whatever the encoder)."""
    return (features - clean).pow(2).sum(1).mean() / clean.var(0).sum().detach().clamp_min(1e-8)


class _Losses:
    """The three training losses of one batch of clean / adversarial pairs."""

    def __init__(self, defense: ViTDefense, features: nn.Module | None):
        self.defense, self.features = defense, features

    def __call__(self, x_clean: torch.Tensor, x_adv: torch.Tensor, generator: torch.Generator) -> dict:
        d, c = self.defense, self.defense.config
        both, target = torch.cat([x_clean, x_adv]), torch.cat([x_clean, x_clean])
        purified = d.purify(both, generator)
        out = {"pixel": F.mse_loss(purified, target)}
        if self.features is not None and c.feature_weight > 0:
            with torch.no_grad():
                goal = self.features(x_clean).repeat(2, 1)
            out["feature"] = feature_error(self.features(purified), goal)
        out.update(self.detector(x_clean, x_adv))
        out["total"] = out["pixel"] + c.feature_weight * out.get("feature", 0.0) + out["detector"]
        return out

    def detector(self, x_clean: torch.Tensor, x_adv: torch.Tensor) -> dict:
        """SupCon on the embeddings plus the linear head's cross-entropy (clean 0, adversarial 1)."""
        d, c = self.defense, self.defense.config
        labels = torch.cat([torch.zeros(len(x_clean)), torch.ones(len(x_adv))]).long()
        token = d.detector_token(torch.cat([x_clean, x_adv]))
        z = F.normalize(d.projector(token), dim=1)
        out = {"contrastive": supervised_contrastive(z, labels, c.temperature)}
        out["classifier"] = F.binary_cross_entropy_with_logits(d.classifier(token)[:, 0], labels.float())
        out["detector"] = c.detector_weight * out["contrastive"] + c.classifier_weight * out["classifier"]
        out["_spread"] = embedding_spread(z.detach(), labels)
        return out


def _schedule(n_batches: int, eps: tuple[int, ...], generator: torch.Generator) -> list[tuple[float, str]]:
    """An (eps, goal) per batch: every eps and both goals equally often, in a seeded order."""
    combos = [(e / 255, g) for e in eps for g in ("promote", "demote")]
    picks = [combos[i % len(combos)] for i in range(n_batches)]
    return [picks[i] for i in torch.randperm(n_batches, generator=generator).tolist()]


@torch.no_grad()
def validate(defense: ViTDefense, clean: torch.Tensor, adversarial: torch.Tensor, features: nn.Module | None) -> dict:
    """On held-out pairs: the detector's AUC (with a centroid from the clean images), the purifier's pixel
    error, and the feature distance to the clean image of the purified clean and adversarial images."""
    defense.eval()
    z_clean, z_adv = defense.embed(clean), defense.embed(adversarial)
    centroid = F.normalize(z_clean.mean(0), dim=0)
    out = {"valid_auc": mann_whitney_auc(1 - z_clean @ centroid, 1 - z_adv @ centroid)}
    if defense.config.classifier_weight > 0:
        out["valid_auc_classifier"] = mann_whitney_auc(defense.score(clean), defense.score(adversarial))
    pc, pa = defense.purify(clean), defense.purify(adversarial)
    out["valid_pixel"] = float(F.mse_loss(pc, clean))
    if features is not None:
        goal = features(clean)
        out.update(
            {
                f"valid_feature_{k}": float(feature_error(features(x), goal))
                for k, x in (("adv", adversarial), ("purified_adv", pa), ("purified_clean", pc))
            }
        )
    return out


@contextlib.contextmanager
def frozen(module: nn.Module | None):
    """``module``'s parameters without gradients inside the block (a loss through it trains nothing of it)."""
    params = [p for p in (module.parameters() if module is not None else []) if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def train_vit_defense(
    defense: ViTDefense,
    clean: torch.Tensor,
    adversary: Adversary,
    features: nn.Module | None = None,
    progress: bool = True,
) -> list[dict]:
    """Train on ``clean`` images (float ``[N, 3, S, S]``) and adversarial versions that ``adversary`` crafts
    for every batch, at an (eps, goal) from ``train_eps`` x (promote, demote) in turn; ``features`` is the
    frozen recommender encoder of the feature loss. 10% of the images are held out: their pairs (crafted
    once, at every eps) give the per-epoch validation record, their clean images calibrate the detector."""
    c = defense.config
    g = torch.Generator().manual_seed(c.seed)
    torch.manual_seed(c.seed)
    order = torch.randperm(len(clean), generator=g)
    n_hold = max(2, len(clean) // 10)
    hold, train = order[:n_hold], order[n_hold:]
    with frozen(features):
        return _train(defense, clean, adversary, features, progress, (hold, train), g)


def _train(defense, clean, adversary, features, progress, split, g) -> list[dict]:
    c, (hold, train) = defense.config, split
    valid_adv = torch.cat(
        [
            adversary(clean[part], part, c.train_eps[i % len(c.train_eps)] / 255, "promote")
            for i, part in enumerate(hold.chunk(len(c.train_eps)))
        ]
    )
    valid_clean = torch.cat([clean[part] for part in hold.chunk(len(c.train_eps))])
    run = _Epochs(defense, clean, adversary, _Losses(defense, features), train, g)
    history = []
    for phase, epochs in (("pretrain", c.pretrain_epochs), ("adversarial", c.epochs), ("detector", c.detector_epochs)):
        if not epochs:
            continue
        optimizer = run.optimizer(phase)
        lr = c.detector_lr if phase == "detector" and c.detector_lr is not None else c.lr
        steps = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=lr, total_steps=epochs * run.n_batches, pct_start=0.1
        )
        best = _BestDetector(defense) if phase == "detector" else None
        for epoch in tqdm(range(epochs), desc=f"vit defense ({phase})", unit="epoch", disable=not progress):
            t0 = time.perf_counter()
            record = run.epoch(phase, optimizer, steps)
            history.append(
                dict(
                    record,
                    phase=phase,
                    epoch=epoch,
                    **validate(defense, valid_clean, valid_adv, features),
                    seconds=time.perf_counter() - t0,
                )
            )
            if best is not None:
                best.offer(history[-1])
        if best is not None:
            best.restore()
    defense.eval()
    defense.calibrate(clean[train], clean[hold])
    return history


class _BestDetector:
    """Keeps the detector weights of the detector epoch with the best held-out AUC (the head's, or the
    centroid distance's without a head) and marks that epoch's record ``selected``."""

    def __init__(self, defense: ViTDefense):
        self.params = defense.detector_parameters()
        self.key = "valid_auc_classifier" if defense.config.classifier_weight > 0 else "valid_auc"
        self.record: dict | None = None
        self.weights: list[torch.Tensor] = []

    def offer(self, record: dict) -> None:
        record["selected"] = 0
        if self.record is None or record[self.key] > self.record[self.key]:
            self.record, self.weights = record, [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def restore(self) -> None:
        self.record["selected"] = 1
        for p, w in zip(self.params, self.weights):
            p.copy_(w)


class _Epochs:
    """One epoch of a training phase: ``pretrain`` (MAE pixel loss on clean images), ``adversarial`` (images
    crafted per batch against the victim, every loss; each batch's images are kept in the pool, the last
    ``pool_epochs`` versions per image) or ``detector`` (the detector alone on one pooled version per image,
    randomly flipped)."""

    def __init__(
        self,
        defense: ViTDefense,
        clean: torch.Tensor,
        adversary: Adversary,
        losses: _Losses,
        train: torch.Tensor,
        g: torch.Generator,
    ):
        self.defense, self.clean, self.adversary, self.losses, self.train, self.g = (
            defense,
            clean,
            adversary,
            losses,
            train,
            g,
        )
        self.n_batches = math.ceil(len(train) / defense.config.batch_size)
        self.pool = clean.new_empty((defense.config.pool_epochs, *clean.shape))
        self.written = torch.zeros(len(clean), dtype=torch.long)  # versions crafted per image so far
        self._shared: torch.optim.Optimizer | None = None

    def optimizer(self, phase: str) -> torch.optim.Optimizer:
        """One AdamW through pre-training and adversarial training (its moments carry over), a fresh one
        over the detector's parameters for the detector epochs."""
        d = self.defense
        if phase == "detector":
            return torch.optim.AdamW(d.detector_parameters(), lr=d.config.lr, weight_decay=0.05)
        if self._shared is None:
            self._shared = torch.optim.AdamW(d.parameters(), lr=d.config.lr, weight_decay=0.05)
        return self._shared

    def epoch(self, phase: str, optimizer, steps) -> dict:
        c, totals, spread = self.defense.config, {}, []
        perm = self.train[torch.randperm(len(self.train), generator=self.g)]
        for b, (eps, goal) in enumerate(_schedule(self.n_batches, c.train_eps, self.g)):
            rows = perm[b * c.batch_size : (b + 1) * c.batch_size]
            out = self.batch(phase, rows, eps, goal)
            if "_spread" in out:
                spread.append(out.pop("_spread"))
            optimizer.zero_grad(set_to_none=True)
            out["total"].backward()
            optimizer.step()
            steps.step()
            for k, v in out.items():
                totals[k] = totals.get(k, 0.0) + v.item() * len(rows) / len(self.train)
        return {**totals, **{k: sum(s[k] for s in spread) / len(spread) for k in (spread[0] if spread else ())}}

    def craft(self, x: torch.Tensor, rows: torch.Tensor, eps: float, goal: str) -> torch.Tensor:
        """Adversarial versions of ``x`` against the victim, written into the pool's ring of versions."""
        self.defense.eval()  # the attack sees the deployed victim; the defense is not part of it
        x_adv = self.adversary(x, rows, eps, goal).detach()
        self.pool[self.written[rows] % len(self.pool), rows] = x_adv
        self.written[rows] += 1
        return x_adv

    def pooled(self, rows: torch.Tensor) -> torch.Tensor:
        """One stored version per image, drawn uniformly from those it has."""
        have = self.written[rows].clamp(max=len(self.pool))
        version = (torch.rand(len(rows), generator=self.g) * have).long()
        return self.pool[version, rows]

    def batch(self, phase: str, rows: torch.Tensor, eps: float, goal: str) -> dict:
        d, x = self.defense, self.clean[rows]
        if phase == "pretrain":
            d.train()
            pixel = F.mse_loss(d.purify(x, self.g), x)
            return {"pixel": pixel, "total": pixel}
        if phase == "adversarial":
            x_adv = self.craft(x, rows, eps, goal)
            d.train()
            return self.losses(x, x_adv, self.g)
        if not self.written[rows].all():
            self.craft(x, rows, eps, goal)
        d.train()
        x_adv, flip = self.pooled(rows), torch.rand(len(rows), generator=self.g) < 0.5
        x_adv = torch.where(flip[:, None, None, None], x_adv.flip(-1), x_adv)
        out = self.losses.detector(torch.where(flip[:, None, None, None], x.flip(-1), x), x_adv)
        out["total"] = out["detector"]
        return out


@dataclass
class DeployedViTConfig:
    """No keys of its own: the ViT is trained once per study from the study's ``vit`` settings."""


VIT_DEPLOYMENTS = {"vit_filter": (True, False), "vit_detector": (False, True), "vit_filter_detector": (True, True)}


class DeployedViT(DeploymentDefense):
    """The ViT defense deployed as a filter (purify every image), a detector (reject flagged uploads)
    or both; ``filter`` and ``detector`` say which."""

    Config = DeployedViTConfig
    filter = detector = False

    @classmethod
    def supports(cls, victim_cls: type) -> bool:
        from distrec.models.visual import VisualVictim

        return issubclass(victim_cls, VisualVictim)

    def apply(self, victim):
        raise TypeError(
            f"{self.name} is deployed with a trained ViTDefense (the study trains it), not applied to a victim"
        )


VIT_SUMMARIES = {
    "vit_filter": "A ViT autoencoder that purifies every item image before the recommender sees it",
    "vit_detector": "A contrastive ViT detector that rejects uploaded item images it flags as adversarial",
    "vit_filter_detector": "The ViT detector, then the ViT purifier on the images it lets through",
}

for _name, (_filter, _detector) in VIT_DEPLOYMENTS.items():
    register_defense(_name)(
        type(
            f"ViT{_name.title().replace('_', '')}",
            (DeployedViT,),
            {
                "filter": _filter,
                "detector": _detector,
                "rejects": _detector,
                "description": VIT_SUMMARIES[_name],
                "paper": "Yin et al., arXiv 2306.07992",
                "__doc__": f"{VIT_SUMMARIES[_name]}.\n\n"
                "    Example (an item_image study; the study trains the ViT)::\n\n"
                "        vit: {pretrain_epochs: 30, epochs: 3}\n"
                f"        defenses: [{_name}]\n",
            },
        )
    )
