"""Adversarial weight perturbation training: AWP (Wu et al., NeurIPS 2020) on every weight matrix and
RAWP (RAWP-FT stage 1, docs/methods.md section 5) on a random half of them, re-drawn every epoch.

Per batch: a proxy takes one Adam step (``proxy_lr``) that *increases* the loss from the current weights
(the proxy's optimiser state persists across batches, as a proxy optimiser created once would; only the
matrices being perturbed need the proxy, so only their gradients and moments are computed);
for each weight matrix the perturbation is d = ||w|| / ||w_proxy - w|| (w_proxy - w) (AWP eq. 9,
layer-wise), added with size gamma to the chosen matrices; the loss and its gradients are taken at the
perturbed weights, which are then restored, and the victim's optimiser steps with those gradients.
RAWP: each matrix is on with probability ``layer_prob`` for the whole epoch, gamma_epoch = gamma * U(0.8, 1.2)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from distrec.attacks.weights import WeightAttackConfig, attacked_scores, perturbed
from distrec.config import Fraction, NonNegativeInt, Positive
from distrec.data.dataset import PreparedDataset
from distrec.data.preprocess import sample_test_negatives
from distrec.defenses.registry import TrainingDefense, register_defense
from distrec.metrics.sampled import sampled_metrics
from distrec.models.trainer import PairwiseVictim, TrainingObjective


@dataclass
class AWPConfig:
    """``gamma``: the perturbation size relative to each matrix's norm (AWP 0.01; RAWP 1e-3, swept
    2e-3..5e-3); ``proxy_lr``: the proxy's Adam step (0.01); ``warmup_epochs``: plain epochs first."""

    gamma: Fraction = 0.01
    proxy_lr: Positive = 0.01
    warmup_epochs: NonNegativeInt = 0


@dataclass
class RAWPConfig(AWPConfig):
    """RAWP: ``gamma`` 1e-3, each matrix perturbed with probability ``layer_prob`` per epoch (0.5);
    ``select_best``: keep the epoch with the best clean + robust HR@10 (FGSM weight attack at ``select_eps``) on
    the valid split, ``select_users`` users against ``select_negatives`` unseen items (the authors' selection)."""

    gamma: Fraction = 1e-3
    layer_prob: Fraction = 0.5
    seed: int = 0
    select_best: bool = False
    select_eps: Fraction = 0.008
    select_users: int = 500
    select_negatives: int = 99


class Validation:
    """The valid split's held-out item per user against seeded unseen items: clean and robust HR@10."""

    def __init__(self, dataset: PreparedDataset, cfg: RAWPConfig, seed: int):
        valid = dataset.table("valid")
        users = valid.column("user_id").to_numpy()
        _, first = np.unique(users, return_index=True)
        users, items = users[first][: cfg.select_users], valid.column("item_id").to_numpy()[first][: cfg.select_users]
        tables = [dataset.table(s) for s in ("train", "valid", "test") if dataset.has(s)]
        all_u = np.concatenate([t.column("user_id").to_numpy() for t in tables])
        all_i = np.concatenate([t.column("item_id").to_numpy() for t in tables])
        _, negatives = sample_test_negatives(all_u, all_i, users, dataset.n_items, cfg.select_negatives, seed)
        order = np.argsort(users)  # sample_test_negatives returns users sorted
        self.users, self.items = users[order], np.concatenate([items[order, None], negatives], 1)
        self.eps = cfg.select_eps

    def __call__(self, model) -> tuple[float, float]:
        clean = sampled_metrics(model.score_pairs, self.users, self.items)["hr@10"]
        u, i = torch.as_tensor(self.users), torch.as_tensor(self.items)
        scores = attacked_scores(model, WeightAttackConfig(eps=self.eps, batch_users=16), u, i)
        robust = sampled_metrics(lambda a, b: scores, self.users, self.items, chunk_users=len(u))["hr@10"]
        return clean, robust


class AWPObjective(TrainingObjective):
    def __init__(self, config: AWPConfig):
        self.config = config
        self.moments: dict | None = None
        self.epoch, self.mask, self.gamma = -1, None, config.gamma

    def start(self, epoch: int, n: int) -> None:
        """Which matrices this epoch perturbs, and gamma_epoch (every matrix, gamma for AWP)."""
        self.epoch, self.mask, self.gamma = epoch, [True] * n, self.config.gamma

    def proxy_direction(self, grads: list[torch.Tensor], layers: list[int]) -> list[torch.Tensor]:
        """w_proxy - w of matrices ``layers`` for one Adam step of ``proxy_lr`` ascending the loss
        (bias-corrected moments; a matrix's moments advance on the batches that perturb it)."""
        b1, b2, eps = 0.9, 0.999, 1e-8
        if self.moments is None:
            self.moments, self.steps = {}, {}
        out = []
        for i, g in zip(layers, grads):
            m, v = self.moments.setdefault(i, (torch.zeros_like(g), torch.zeros_like(g)))
            t = self.steps[i] = self.steps.get(i, 0) + 1
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            out.append(self.config.proxy_lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps))
        return out

    def backward(self, model: PairwiseVictim, users, pos, neg, epoch: int) -> torch.Tensor:
        if epoch < self.config.warmup_epochs:
            return super().backward(model, users, pos, neg, epoch)
        matrices = model.weight_matrices()
        if epoch != self.epoch:
            self.start(epoch, len(matrices))
        layers = [i for i, on in enumerate(self.mask) if on]
        chosen = [matrices[i] for i in layers]
        if not chosen:  # RAWP drew no matrix this epoch
            return super().backward(model, users, pos, neg, epoch)
        weights = [w for _, w, _ in chosen]
        grads = torch.autograd.grad(model.loss(users, pos, neg), weights)  # only the perturbed matrices
        with torch.no_grad():
            deltas = [
                self.gamma * w.norm() / step.norm().clamp_min(1e-12) * step
                for w, step in zip(weights, self.proxy_direction(list(grads), layers))
            ]
        with perturbed(chosen, deltas):
            loss = model.loss(users, pos, neg)
            loss.backward()
        return loss.detach()


class RAWPObjective(AWPObjective):
    def __init__(self, config: RAWPConfig):
        super().__init__(config)
        self.validate: Validation | None = None
        self.best: tuple[float, dict, int] | None = None  # (clean + robust HR@10, weights, epoch)

    def end_epoch(self, model, dataset, record: dict) -> None:
        if not self.config.select_best or not dataset.has("valid"):
            return
        if self.validate is None:
            self.validate = Validation(dataset, self.config, model.config.seed + 13)
        record["valid_hr@10"], record["valid_robust_hr@10"] = self.validate(model)
        total = record["valid_hr@10"] + record["valid_robust_hr@10"]
        if self.best is None or total > self.best[0]:
            self.best = (total, {k: v.detach().clone() for k, v in model.state_dict().items()}, record["epoch"])

    def after_fit(self, model, dataset, progress: bool) -> list[dict]:
        if self.best is None:
            return []
        model.load_state_dict(self.best[1])
        return [{"stage": "selection", "epoch": self.best[2], "valid_hr@10+robust_hr@10": self.best[0]}]

    def start(self, epoch: int, n: int) -> None:
        rng = np.random.default_rng([self.config.seed, epoch])
        self.epoch, self.mask = epoch, (rng.random(n) < self.config.layer_prob).tolist()
        self.gamma = self.config.gamma * float(rng.uniform(0.8, 1.2))


class _WeightPerturbationDefense(TrainingDefense):
    objective: type

    @classmethod
    def supports(cls, victim_cls: type) -> bool:
        return issubclass(victim_cls, PairwiseVictim) and hasattr(victim_cls, "weight_matrices")

    def apply(self, victim):
        victim.objective = self.objective(self.config)
        return victim


@register_defense("awp")
class AWP(_WeightPerturbationDefense):
    """AWP on every weight matrix (gamma 0.01).

    Example::

        defense = create_defense("awp", gamma=0.01, proxy_lr=0.01)
        defense.apply(victim).fit(data)
    """

    description = "Adversarial weight perturbation on every weight matrix"
    paper = "Wu, Xia and Wang, NeurIPS 2020"

    Config = AWPConfig
    objective = AWPObjective


@register_defense("rawp")
class RAWP(_WeightPerturbationDefense):
    """RAWP-FT stage 1: AWP on a random half of the weight matrices, re-drawn per epoch (gamma 1e-3).

    Example::

        defense = create_defense("rawp", gamma=0.001, proxy_lr=0.01)
        defense.apply(victim).fit(data)
    """

    description = "RAWP-FT stage 1: weight perturbation on a random half of the weight matrices"
    paper = "Qian et al., KBS 2025"

    Config = RAWPConfig
    objective = RAWPObjective
