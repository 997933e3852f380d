"""RAWP-FT (Qian et al., KBS 2025; docs/methods.md section 5): RAWP training (stage 1), then robust fine-tuning
of the least robust weight matrix (stage 2, after RiFT, Zhu et al. ICCV 2023):

1. robustness score of each matrix: with only it trainable, gradient ascent on the training BCE (SGD,
   lr 1, ``robustness_passes`` passes), each pass rescaling every row's change to ``robustness_eps`` of
   the row's norm; score = the highest mean training loss reached - the original loss;
2. the ``ft_layers`` matrices with the highest score (the least robust, as the paper says) are fine-tuned
   alone with AWP on them (``ft_gamma``), SGD with momentum and weight decay, lr x 0.1 at half;
3. interpolation theta(a) = a theta_ft + (1 - a) theta_init, a in ``alphas``: the a with the best
   (HR@10 + robust HR@10) / 2 on the validation split among those whose robust HR@10 is at least a = 0's.

Steps 2-3 select on the ``valid`` split (its item per user against ``select_negatives`` unseen items drawn
with the seed); without a valid split the last fine-tuning epoch is kept with a = 1, and the record says
so. ``robustness_batches`` / ``ft_batches`` cap the batches per pass for CPU budgets (None: all)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from distrec.config import AtLeastOne, Fraction, NonNegativeInt, UnitInterval
from distrec.data.dataset import PreparedDataset
from distrec.data.streaming import InteractionStream
from distrec.defenses.awp import (
    AWPConfig,
    AWPObjective,
    RAWPConfig,
    RAWPObjective,
    Validation,
    _WeightPerturbationDefense,
)
from distrec.defenses.registry import register_defense


@dataclass
class RAWPFTConfig(RAWPConfig):
    robustness_eps: Fraction = 0.008
    robustness_passes: AtLeastOne = 3
    robustness_batches: AtLeastOne | None = 200
    ft_layers: AtLeastOne = 1
    ft_gamma: Fraction = 0.003
    ft_epochs: NonNegativeInt = 20
    ft_lr: float = 0.005
    ft_momentum: float = 0.9
    ft_weight_decay: float = 5e-4
    ft_batch_size: int = 100
    ft_batches: int | None = None
    alphas: list[UnitInterval] = field(default_factory=lambda: [round(0.1 * i, 1) for i in range(11)])

    def __post_init__(self):
        if 0 not in self.alphas:
            raise ValueError(f"alphas must include 0 (the clean model), got {self.alphas}")


def _batches(model, dataset: PreparedDataset, batch_size: int, epoch: int, limit: int | None):
    stream = InteractionStream(
        dataset,
        "train",
        batch_size=batch_size,
        num_negatives=model.config.num_negatives,
        seed=model.config.seed + 7919 * (epoch + 1),
        backend="memory",
    )
    for n, b in enumerate(stream.epoch(epoch)):
        if limit is not None and n >= limit:
            return
        neg = b["neg_item"]
        yield b["user_id"], b["item_id"], neg if model.config.num_negatives > 1 else neg[:, 0]


def layer_robustness(model, dataset: PreparedDataset, cfg: RAWPFTConfig) -> dict[str, float]:
    """Step 1: how far ``robustness_passes`` passes of row-bounded gradient ascent on one matrix raise the
    mean training loss (higher = less robust)."""
    scores = {}

    def mean_loss(epoch):
        with torch.no_grad():
            return float(
                np.mean([model.loss(*b).item() for b in _batches(model, dataset, 1024, epoch, cfg.robustness_batches)])
            )

    base = mean_loss(0)
    for name, w, axis in model.weight_matrices():
        w0 = w.detach().clone()
        best = base
        for p in range(cfg.robustness_passes):
            for b in _batches(model, dataset, 1024, p + 1, cfg.robustness_batches):
                (g,) = torch.autograd.grad(model.loss(*b), [w])
                with torch.no_grad():
                    w.add_(g)  # SGD lr 1, ascending
            with torch.no_grad():
                d = w - w0
                w.copy_(
                    w0
                    + d
                    * (
                        cfg.robustness_eps
                        * w0.norm(dim=axis, keepdim=True)
                        / d.norm(dim=axis, keepdim=True).clamp_min(1e-12)
                    )
                )
            best = max(best, mean_loss(0))
        with torch.no_grad():
            w.copy_(w0)
        scores[name] = best - base
    return scores


class RAWPFTObjective(RAWPObjective):
    def after_fit(self, model, dataset: PreparedDataset, progress: bool) -> list[dict]:
        cfg = self.config
        selection = super().after_fit(model, dataset, progress)  # stage 1's best epoch, with select_best
        scores = layer_robustness(model, dataset, cfg)
        chosen = sorted(scores, key=scores.get, reverse=True)[: cfg.ft_layers]
        records = selection + [
            {"stage": "robustness", "layer": n, "score": s, "fine_tuned": n in chosen} for n, s in scores.items()
        ]
        matrices = {n: (w, a) for n, w, a in model.weight_matrices()}
        init = {n: matrices[n][0].detach().clone() for n in chosen}
        validate = Validation(dataset, cfg, model.config.seed + 11) if dataset.has("valid") else None
        best_state, best_robust = {n: t.clone() for n, t in init.items()}, -1.0
        awp = AWPObjective(AWPConfig(gamma=cfg.ft_gamma, proxy_lr=cfg.proxy_lr))
        params = [matrices[n][0] for n in chosen]
        frozen = [p for p in model.parameters() if all(p is not q for q in params)]
        for p in frozen:
            p.requires_grad_(False)
        opt = torch.optim.SGD(params, lr=cfg.ft_lr, momentum=cfg.ft_momentum, weight_decay=cfg.ft_weight_decay)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, cfg.ft_epochs // 2), gamma=0.1)
        restricted = _Restricted(model, chosen)
        try:
            for epoch in range(cfg.ft_epochs):
                model.train()
                losses = []
                for users, pos, neg in _batches(model, dataset, cfg.ft_batch_size, 100 + epoch, cfg.ft_batches):
                    opt.zero_grad(set_to_none=True)
                    losses.append(float(awp.backward(restricted, users, pos, neg, epoch)))
                    opt.step()
                sched.step()
                model.eval()
                record = {
                    "stage": "fine_tune",
                    "epoch": epoch,
                    "loss": float(np.mean(losses)) if losses else float("nan"),
                }
                if validate is not None:
                    record["valid_hr@10"], record["valid_robust_hr@10"] = validate(model)
                    if record["valid_robust_hr@10"] > best_robust:
                        best_robust, best_state = (
                            record["valid_robust_hr@10"],
                            {n: matrices[n][0].detach().clone() for n in chosen},
                        )
                else:
                    best_state = {n: matrices[n][0].detach().clone() for n in chosen}
                records.append(record)
        finally:
            for p in frozen:
                p.requires_grad_(True)
        records.append(self._interpolate(model, matrices, init, best_state, validate))
        return records

    def _interpolate(self, model, matrices, init, tuned, validate) -> dict:
        """Step 3: the mixing weight a of the fine-tuned and the initial matrices."""

        def mix(a):
            with torch.no_grad():
                for n in init:
                    matrices[n][0].copy_(a * tuned[n] + (1 - a) * init[n])

        if validate is None:
            mix(1.0)
            return {
                "stage": "interpolation",
                "alpha": 1.0,
                "selection": "none (no valid split): the last fine-tuning epoch",
            }
        results = {}
        for a in self.config.alphas:
            mix(a)
            results[a] = validate(model)
        floor = results[0][1]
        eligible = [a for a, (_, robust) in results.items() if robust >= floor]
        best = max(eligible, key=lambda a: sum(results[a]) / 2)
        mix(best)
        return {
            "stage": "interpolation",
            "alpha": best,
            "valid": {str(a): {"hr@10": c, "robust_hr@10": r} for a, (c, r) in results.items()},
        }


class _Restricted:
    """The victim seen by AWP during fine-tuning: its loss, and only the chosen weight matrices."""

    def __init__(self, model, names: list[str]):
        self.model, self.names = model, set(names)

    def loss(self, *batch):
        return self.model.loss(*batch)

    def weight_matrices(self):
        return [m for m in self.model.weight_matrices() if m[0] in self.names]


@register_defense("rawp_ft")
class RAWPFT(_WeightPerturbationDefense):
    """RAWP, then the robustness score of every weight matrix, fine-tuning of the least robust one and
    interpolation (the per-matrix scores are in the fit history, ``stage: robustness``).

    Example::

        defense = create_defense("rawp_ft", gamma=0.001, proxy_lr=0.01)
        defense.apply(victim).fit(data)
    """

    description = "RAWP, then robust fine-tuning of the least robust weight matrix"
    paper = "Qian et al., KBS 2025"

    Config = RAWPFTConfig
    objective = RAWPFTObjective
