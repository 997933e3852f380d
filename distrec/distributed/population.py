"""SharpAP's worst-case search over a population of perturbed surrogates, one Ray actor each.

At every outer step the coordinator sends the current fake profiles to all P members in parallel;
each member retrains its surrogate, perturbs it its own way and returns its attack loss and poison
gradient; the coordinator takes the gradient of the worst member (the largest attack loss: the victim
the poison transfers to least), or a soft-max weighted mix, and updates the fake data with the wrapped
attack's outer loop. A member is one of:

- ``sam``: SharpAP's ascent direction, e = rho g / |g| (docs/methods.md section 2);
- ``random``: a random direction of the same radius (seeded per member and step);
- ``plain``: no perturbation, the trained surrogate itself;
and any member may change the surrogate's config (seed, factors, alpha, gradient mode) or its
``architecture`` (``wrmf``, ``bpr``, ``lightgcn``: a member of another architecture than the attack's
surrogate takes only its own ``surrogate`` keys), so members also differ by training seed and by
structure. Attack losses of different architectures are on different scales, so members are compared
by their loss relative to their first step's (``compare: relative``, the default for mixed
populations). With P = 1 and a ``sam`` member this is exactly the single-process SharpAP for the same seed.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field

import numpy as np
import ray
import torch

from distrec.attacks import SharpAP, create_attack
from distrec.attacks.base import Attack, AttackContext
from distrec.attacks.sharpap import SharpAPConfig
from distrec.attacks.surrogate_registry import create_surrogate, surrogate_class
from distrec.attacks.surrogates import Factors
from distrec.config import check_keys

KINDS = ("sam", "random", "plain")


@dataclass
class MemberSpec:
    kind: str = "sam"
    rho: float = 0.05
    seed: int = 0
    architecture: str | None = None
    surrogate: dict = field(default_factory=dict)


class SurrogateMember:
    """One member: its own surrogate and perturbation, computing poison gradients for the coordinator."""

    def __init__(
        self,
        ctx: AttackContext,
        attack: str,
        attack_config: dict,
        surrogate_config: dict,
        member: dict,
        sharpap: dict | None = None,
        base: str = "wrmf",
    ):
        self.spec = MemberSpec(**member)
        if self.spec.kind not in KINDS:
            raise ValueError(f"population member kind must be one of {KINDS}, got {self.spec.kind!r}")
        self.ctx = ctx
        self.attack = create_attack(attack, **attack_config)
        arch = self.spec.architecture or base
        config = {"seed": ctx.seed, **(surrogate_config if arch == base else {}), **self.spec.surrogate}
        self.surrogate = create_surrogate(arch, ctx.train, ctx.budget.n_fake, ctx.device, **config)
        self.sharp = SharpAP(self.attack, **dict(sharpap or {}, rho=self.spec.rho))
        self.steps = 0

    def step(self, fake: torch.Tensor) -> tuple[torch.Tensor, dict]:
        hook = {"sam": self.sharp.worst_case, "random": self.random_case, "plain": None}[self.spec.kind]
        grad, record = self.attack.poison_gradient(fake, self.ctx, self.surrogate, hook)
        self.steps += 1
        return grad, dict(record, member=dataclasses.asdict(self.spec))

    def random_case(self, params: Factors, grads: Factors, loss_fn, surrogate) -> tuple[float, Factors, dict]:
        gen = torch.Generator().manual_seed(self.spec.seed * 1_000_003 + self.steps)
        direction = Factors(
            torch.randn(params.users.shape, generator=gen), torch.randn(params.items.shape, generator=gen)
        )
        return self.sharp.worst_case(params, direction, loss_fn, surrogate)


@dataclass
class PopulationConfig:
    """``members``: the population (see :class:`MemberSpec`); ``combine``: ``worst`` or ``softmax``
    (weights softmax(loss / (temperature * mean |loss|)) over the members' row-normalised gradients);
    ``compare``: members ranked by their attack ``loss``, or by it ``relative`` to their first step's
    (scale-free across architectures); ``auto``: relative when the members' architectures differ."""

    members: list[dict] = field(default_factory=lambda: [{"kind": "sam"}])
    combine: str = "worst"
    temperature: float = 0.01
    compare: str = "auto"
    member_cpus: float = 1
    member_gpus: float = 0


class PopulationSharpAP(Attack):
    """Wraps a gradient attack (revadv, dada, rapu): its outer loop, with the poison gradient of the
    population's worst member; the profiles returned are those of the step whose least-hit member
    reached the highest surrogate T-HR (the worst case over the population, as the gradient)."""

    Config = PopulationConfig
    uses_surrogate = True

    def __init__(self, attack: str, attack_config: dict | None = None, sharpap: dict | None = None, **config):
        super().__init__(**config)
        if self.config.combine not in ("worst", "softmax"):
            raise ValueError(f"population combine must be 'worst' or 'softmax', got {self.config.combine!r}")
        if self.config.compare not in ("auto", "loss", "relative"):
            raise ValueError(f"population compare must be 'auto', 'loss' or 'relative', got {self.config.compare!r}")
        for i, member in enumerate(self.config.members):
            spec = MemberSpec(**member)
            if spec.architecture is not None:
                surrogate_class(spec.architecture)
                check_keys(
                    surrogate_class(spec.architecture).Config, spec.surrogate, "population", f"members.{i}.surrogate"
                )
        self.attack_name, self.attack_config = attack, dict(attack_config or {})
        self.relative, self.first_losses = self.config.compare == "relative", None
        self.sharpap = dataclasses.asdict(SharpAPConfig(**(sharpap or {})))
        self.attack = create_attack(attack, **self.attack_config)
        self.name = "population-sharpap"

    @property
    def label(self) -> str:
        return f"{self.attack.label}+population-sharpap"

    @property
    def history(self) -> list[dict]:
        return self.attack.history

    def describe(self) -> dict:
        return {
            "attack": self.label,
            "config": self.attack.describe()["config"],
            "population": dataclasses.asdict(self.config),
            "sharpap": self.sharpap,
        }

    def craft(self, ctx: AttackContext, surrogate_config: dict | None = None, surrogate: str = "wrmf") -> torch.Tensor:
        cfg = self.config
        architectures = {m.get("architecture") or surrogate for m in cfg.members}
        self.relative = cfg.compare == "relative" or (cfg.compare == "auto" and len(architectures) > 1)
        self.first_losses = None
        need = cfg.member_cpus * len(cfg.members)
        have = ray.cluster_resources().get("CPU", 0)
        if need > have:
            warnings.warn(
                f"population: {len(cfg.members)} members x {cfg.member_cpus} CPUs = {need} CPUs, the cluster has "
                f"{have}; members wait for resources (lower member_cpus or let the autoscaler add nodes)",
                stacklevel=2,
            )
        actor = ray.remote(SurrogateMember).options(num_cpus=cfg.member_cpus, num_gpus=cfg.member_gpus)
        members = [
            actor.remote(
                ctx, self.attack_name, self.attack_config, dict(surrogate_config or {}), m, self.sharpap, surrogate
            )
            for m in cfg.members
        ]
        try:
            return self.attack.craft(
                ctx, gradient_fn=lambda fake: self.combine(ray.get([m.step.remote(fake) for m in members]))
            )
        finally:
            for m in members:
                ray.kill(m)

    def combine(self, results: list[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, dict]:
        raw = np.array([r.get("worst_case_loss", r["attack_loss"]) for _, r in results])
        losses, extra = raw, {}
        if self.relative:
            self.first_losses = raw if self.first_losses is None else self.first_losses
            losses = raw / np.maximum(np.abs(self.first_losses), 1e-12)
            extra["member_relative_losses"] = losses.tolist()
        worst = int(np.argmax(losses))
        record = dict(results[worst][1], member_losses=raw.tolist(), worst_member=worst, **extra)
        for key in (
            k for k in results[worst][1] if k.startswith("surrogate_t_hr@")
        ):  # the best step is the one whose weakest member is hit most
            record[f"member_{key}"] = [r[key] for _, r in results]
            record[key] = min(record[f"member_{key}"])
        if self.config.combine == "worst" or len(results) == 1:
            return results[worst][0], record
        scaled = (losses - losses.max()) / (self.config.temperature * max(float(np.abs(losses).mean()), 1e-12))
        weights = np.exp(scaled) / np.exp(scaled).sum()
        grad = sum(float(w) * g / g.norm().clamp_min(1e-12) for w, (g, _) in zip(weights, results))
        return grad, dict(record, member_weights=weights.tolist())
