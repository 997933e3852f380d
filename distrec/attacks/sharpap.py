"""SharpAP (Xie, Yang, Shao, Wu, arXiv 2604.22170): sharpness-aware poisoning that transfers."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from distrec.attacks.base import Attack, AttackContext
from distrec.attacks.gradient import GradientAttack, LossFn
from distrec.attacks.surrogates import Factors


@dataclass
class SharpAPConfig:
    """``rho``: radius of the worst-case ball, relative to the norm of the surrogate's parameters when
    ``relative`` (scale-free across surrogates), else absolute. ``rec_tolerance``: the worst-case
    surrogate's recommendation loss may exceed the trained one's by at most this fraction; ``e`` is
    halved until it does (at most ``max_halvings`` times, enough to reach it from any ``rho``);
    ``None`` disables the constraint. On WRMF surrogates the constraint, not ``rho``, sets the radius:
    ML-1M factors have norm ~2000 and a 5% rise in the recommendation loss is reached near
    rho = 1e-4 relative."""

    rho: float = 0.05
    relative: bool = True
    rec_tolerance: float | None = 0.05
    max_halvings: int = 30


class SharpAP(Attack):
    """Wraps a gradient attack and replaces its poison gradient by the gradient at the approximately
    worst-case surrogate near the trained one. The problem (docs/methods.md section 2) is

        min_X  max_{|e| <= rho, L_rec(theta* + e) <= (1 + tol) L_rec(theta*)}  L_atk(theta*(X) + e),
        theta*(X) = argmin_theta L_rec(theta; D u X)

    and each outer step solves the inner max by one SAM step (Foret et al. 2021, eq. 2):
    g = grad_theta L_atk(theta*), e = rho g / |g| (|.| the L2 norm over all of theta's tensors),
    halved while the recommendation-loss constraint fails; the poison gradient is then
    dL_atk(theta*(X) + e)/dX with e held constant. With rho = 0, e = 0 and the step is exactly the
    wrapped attack's."""

    Config = SharpAPConfig
    uses_surrogate = True

    def __init__(self, attack: GradientAttack, **config):
        if not isinstance(attack, GradientAttack):
            raise ValueError(f"sharpap wraps a gradient attack (revadv, dada, pga), not {attack.name!r}")
        super().__init__(**config)
        self.attack = attack
        self.name = "sharpap"

    @property
    def label(self) -> str:
        return f"{self.attack.label}+sharpap"

    @property
    def history(self) -> list[dict]:
        return self.attack.history

    def describe(self) -> dict:
        inner = self.attack.describe()
        return {"attack": self.label, "config": inner["config"], "sharpap": dataclasses.asdict(self.config)}

    def craft(self, ctx: AttackContext, surrogate=None) -> torch.Tensor:
        return self.attack.craft(ctx, surrogate, worst_case=self.worst_case)

    def worst_case(self, params: Factors, grads: Factors, loss_fn: LossFn, surrogate) -> tuple[float, Factors, dict]:
        cfg = self.config
        g_norm = torch.sqrt(grads.users.pow(2).sum() + grads.items.pow(2).sum())
        radius = cfg.rho
        if cfg.relative:
            radius = cfg.rho * float(torch.sqrt(params.users.pow(2).sum() + params.items.pow(2).sum()))
        scale = radius / float(g_norm.clamp_min(1e-12))
        halvings, rise = 0, None
        if cfg.rec_tolerance is not None and scale > 0:
            base = float(surrogate.rec_loss(params))
            rise = float(surrogate.rec_loss(self._shift(params, grads, scale))) / base - 1.0
            while halvings < cfg.max_halvings and rise > cfg.rec_tolerance:
                scale, halvings = scale / 2.0, halvings + 1
                rise = float(surrogate.rec_loss(self._shift(params, grads, scale))) / base - 1.0
        loss, new_grads = loss_fn(self._shift(params, grads, scale))
        return loss, new_grads, {"rho_effective": scale * float(g_norm), "halvings": halvings, "rec_loss_rise": rise}

    @staticmethod
    def _shift(params: Factors, grads: Factors, scale: float) -> Factors:
        return Factors(params.users + scale * grads.users, params.items + scale * grads.items)
