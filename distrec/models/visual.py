"""Visually-aware recommenders whose item score depends on the item's image through a frozen timm
encoder f, differentiably, so attacks can perturb pixels: VBPR, DeepStyle and AMR.

Item features f(img_i) are computed once per fit (``prepare_fit``) from the dataset's ``item_images``;
items without an image use f of a black image. ``score_items_with(users, items, features)`` scores any
item features (e.g. those of perturbed images) differentiably.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from distrec.data.dataset import PreparedDataset
from distrec.data.item_images import load_item_images
from distrec.models.embedding import Embedder, embed_images
from distrec.models.losses import bpr_loss, l2_reg
from distrec.models.registry import register_victim
from distrec.models.trainer import PairwiseVictim, TrainConfig


@dataclass
class VisualConfig(TrainConfig):
    """``encoder``: folder of an image encoder (``distrec vars encoder --out``); ``image_size``: the
    pixels it sees; ``dim``: latent factors; ``visual_dim``: the projected visual factors."""

    encoder: str = ""
    image_size: int = 64
    dim: int = 32
    visual_dim: int = 32
    reg: float = 1e-4
    lr: float = 1e-3

    def __post_init__(self):
        super().__post_init__()
        if self.num_negatives != 1:
            raise ValueError(
                "num_negatives must be 1 for the visual victims (BPR on one negative a row, VBPR eq. 4), got "
                f"{self.num_negatives}"
            )


class VisualVictim(PairwiseVictim):
    Config = VisualConfig

    def __init__(self, n_users: int, n_items: int, **config):
        super().__init__(n_users, n_items, **config)
        if not self.config.encoder:
            raise ValueError(
                f"{self.name}: config key encoder: the folder of an image encoder is required (distrec vars encoder "
                "--out DIR)"
            )
        self.encoder = Embedder.load(self.config.encoder)
        self.encoder.requires_grad_(False)
        self.encoder.eval()
        feature_dim = self.encoder.config.embed_dim
        self.register_buffer("features", torch.zeros(n_items, feature_dim))
        self._initialised = 0
        self.visual_proj = self.param(feature_dim, self.config.visual_dim, scale=0.01)

    def param(self, *shape: int, scale: float = 0.1) -> torch.nn.Parameter:
        """A seeded normal initialisation, its own stream per parameter so that a subclass adding one
        does not change the others."""
        gen = torch.Generator().manual_seed(self.config.seed * 7919 + self._initialised)
        self._initialised += 1
        return torch.nn.Parameter(torch.randn(*shape, generator=gen) * scale)

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()  # frozen: batch-norm statistics stay those of pre-training
        return self

    def prepare_fit(self, dataset: PreparedDataset, device: torch.device) -> None:
        images = load_item_images(dataset, self.config.image_size)
        self.features.copy_(embed_images(self.encoder, images).to(device))
        self.images_missing = int((~images.has_image).sum())

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """f(img) for pixels in [0, 1], differentiable with respect to them."""
        return self.encoder(pixels)

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def item_vectors(self, items: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """The items' vectors given ``features`` ``[len(items), F]`` as their image features; the score is
        ``user_vectors(u) . item_vectors(i)``."""
        raise NotImplementedError

    def score_items_with(self, users: torch.Tensor, items: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Scores ``[len(users), len(items)]``, differentiable with respect to ``features``."""
        return self.user_vectors(users) @ self.item_vectors(items, features).T

    def score(self, users: torch.Tensor) -> torch.Tensor:
        return self.score_items_with(users, torch.arange(self.n_items, device=users.device), self.features)

    def bpr_with(self, users, pos, neg, f_pos, f_neg) -> torch.Tensor:
        """BPR with the given image features of the positive and negative items, plus L2 regularisation."""
        u = self.user_vectors(users)
        i, j = self.item_vectors(pos, f_pos), self.item_vectors(neg, f_neg)
        reg = l2_reg(u, i, j) + 0.5 * self.visual_proj.pow(2).sum() / len(users)
        return bpr_loss((u * i).sum(-1), (u * j).sum(-1)) + self.config.reg * reg

    def loss(self, users, pos, neg):
        return self.bpr_with(users, pos, neg, self.features[pos], self.features[neg])


@register_victim("vbpr")
class VBPR(VisualVictim):
    """VBPR (He & McAuley, AAAI 2016, eq. 2): x_ui = beta_i + gamma_u . gamma_i + theta_u . (E f_i) + beta' . f_i,
    trained with BPR.

    Example::

        model = create_victim("vbpr", data.n_users, data.n_items, epochs=50, lr=0.001)
        model.fit(data)
    """

    description = "Visual BPR: latent factors plus projected image features"
    paper = "He and McAuley, AAAI 2016"

    def __init__(self, n_users: int, n_items: int, **config):
        super().__init__(n_users, n_items, **config)
        c = self.config
        self.gamma_user, self.gamma_item = self.param(n_users, c.dim), self.param(n_items, c.dim)
        self.theta_user = self.param(n_users, c.visual_dim)
        self.item_bias = torch.nn.Parameter(torch.zeros(n_items))
        self.visual_bias = torch.nn.Parameter(torch.zeros(self.features.shape[1]))

    def user_vectors(self, users):
        return torch.cat(
            [self.gamma_user[users], self.theta_user[users], torch.ones(len(users), 1, device=users.device)], 1
        )

    def item_vectors(self, items, features):
        bias = self.item_bias[items] + features @ self.visual_bias
        return torch.cat([self.gamma_item[items], features @ self.visual_proj, bias[:, None]], 1)


@dataclass
class AMRConfig(VisualConfig):
    """``adv_eps``: the feature perturbation's norm relative to ||f_i|| (at 0.5 on ML-1M the model learns to
    ignore the images altogether); ``adv_weight``: lambda; ``adv_start``: the epoch adversarial training
    begins (AMR pre-trains VBPR first)."""

    adv_eps: float = 0.1
    adv_weight: float = 1.0
    adv_start: int = 0


@register_victim("amr")
class AMR(VBPR):
    """AMR (Tang et al., TKDE 2019, eq. 8): VBPR trained with adversarial perturbations of the image
    features, min_theta L_BPR(f) + lambda L_BPR(f + delta*), delta* = adv_eps ||f|| g / ||g|| with
    g = d L_BPR / d f (the fast-gradient solution of the inner max).

    Example::

        model = create_victim("amr", data.n_users, data.n_items, epochs=50, lr=0.001)
        model.fit(data)
    """

    description = "VBPR trained with adversarial perturbations of the image features"
    paper = "Tang et al., TKDE 2019"

    Config = AMRConfig

    def start_epoch(self, epoch: int) -> None:
        self.adversarial = epoch >= self.config.adv_start

    def loss(self, users, pos, neg):
        f_pos, f_neg = self.features[pos], self.features[neg]
        clean = self.bpr_with(users, pos, neg, f_pos, f_neg)
        if not getattr(self, "adversarial", True) or self.config.adv_weight == 0:
            return clean
        f_pos_, f_neg_ = f_pos.clone().requires_grad_(), f_neg.clone().requires_grad_()
        g_pos, g_neg = torch.autograd.grad(self.bpr_with(users, pos, neg, f_pos_, f_neg_), (f_pos_, f_neg_))
        shift = lambda f, g: f + self.config.adv_eps * f.norm(dim=1, keepdim=True) * F.normalize(g, dim=1)  # noqa: E731
        return clean + self.config.adv_weight * self.bpr_with(users, pos, neg, shift(f_pos, g_pos), shift(f_neg, g_neg))


@dataclass
class DeepStyleConfig(VisualConfig):
    """``categories``: number of item categories (the style subtracted is the item's first category)."""

    categories: int = 1


@register_victim("deepstyle")
class DeepStyle(VisualVictim):
    """DeepStyle (Liu et al., SIGIR 2017, eq. 3): x_ui = p_u . (E f_i - l_{c_i} + q_i), the item's
    category embedding l_c removed from its visual embedding to keep the style; trained with BPR.

    Example::

        model = create_victim("deepstyle", data.n_users, data.n_items, epochs=50, lr=0.001)
        model.fit(data)
    """

    description = "Visual recommender that removes the category style from an item's image features"
    paper = "Liu et al., SIGIR 2017"

    Config = DeepStyleConfig

    def __init__(self, n_users: int, n_items: int, **config):
        super().__init__(n_users, n_items, **config)
        c = self.config
        if c.visual_dim != c.dim:
            raise ValueError(
                f"deepstyle: visual_dim ({c.visual_dim}) must equal dim ({c.dim}): E f_i and q_i share a space"
            )
        self.user_emb, self.item_emb = self.param(n_users, c.dim), self.param(n_items, c.dim)
        self.category_emb = self.param(c.categories, c.dim)
        self.register_buffer("item_category", torch.zeros(n_items, dtype=torch.long))

    def prepare_fit(self, dataset: PreparedDataset, device: torch.device) -> None:
        super().prepare_fit(dataset, device)
        cats = dataset.item_categories() or [[] for _ in range(self.n_items)]
        first = torch.tensor([c[0] if c else 0 for c in cats], dtype=torch.long)
        if int(first.max()) >= self.config.categories:
            raise ValueError(
                f"deepstyle: config key categories is {self.config.categories} but the dataset has category id "
                f"{int(first.max())}"
            )
        self.item_category.copy_(first.to(device))

    def user_vectors(self, users):
        return self.user_emb[users]

    def item_vectors(self, items, features):
        return features @ self.visual_proj - self.category_emb[self.item_category[items]] + self.item_emb[items]
