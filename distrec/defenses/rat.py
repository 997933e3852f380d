"""RAT: adversarial training on hidden-layer outputs (Qian et al., TOIS 2023; a baseline of RAWP-FT,
docs/methods.md section 5): each hidden layer's output h is moved by
Delta = eps ||h|| g / ||g|| with g = dL/dh (per example, relative to the output's norm; the FGSM step on
the activations), and the loss is L(Theta) + lambda L(Theta; h + Delta).

A victim lists the layers whose outputs are perturbed with ``hidden_layers()`` (``nn.Module`` objects
called in its forward pass); the perturbation is added by forward hooks, so the victim's code is
unchanged."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from distrec.config import Fraction, NonNegative, NonNegativeInt
from distrec.defenses.registry import TrainingDefense, register_defense
from distrec.models.trainer import PairwiseVictim, TrainingObjective


@dataclass
class RATConfig:
    """``eps``: the perturbation of each hidden output relative to its norm; ``adv_reg``: lambda;
    ``warmup_epochs``: plain epochs first."""

    eps: Fraction = 0.05
    adv_reg: NonNegative = 1.0
    warmup_epochs: NonNegativeInt = 0


@contextlib.contextmanager
def hooked(layers, hook):
    """Forward hooks ``hook(index, output) -> output`` on ``layers`` inside the block."""
    handles = [layer.register_forward_hook(lambda _m, _i, out, k=k: hook(k, out)) for k, layer in enumerate(layers)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class RATObjective(TrainingObjective):
    def __init__(self, config: RATConfig):
        self.config = config

    def backward(self, model: PairwiseVictim, users, pos, neg, epoch: int) -> torch.Tensor:
        if epoch < self.config.warmup_epochs:
            return super().backward(model, users, pos, neg, epoch)
        layers = model.hidden_layers()
        outputs: dict[int, torch.Tensor] = {}

        def record(k, out):
            outputs[k] = out
            return out

        with hooked(layers, record):
            loss = model.loss(users, pos, neg)
        keys = sorted(outputs)
        grads = torch.autograd.grad(loss, [outputs[k] for k in keys], retain_graph=True)
        loss.backward()
        with torch.no_grad():
            deltas = {
                k: self.config.eps * outputs[k].norm(dim=-1, keepdim=True) * F.normalize(g, dim=-1)
                for k, g in zip(keys, grads)
            }
        with hooked(layers, lambda k, out: out + deltas[k]):
            adversarial = model.loss(users, pos, neg)
        (self.config.adv_reg * adversarial).backward()
        return loss.detach() + self.config.adv_reg * adversarial.detach()


@register_defense("rat")
class RAT(TrainingDefense):
    """Trains the victim with :class:`RATObjective`.

    Example::

        defense = create_defense("rat", eps=0.05, adv_reg=1.0)
        defense.apply(victim).fit(data)
    """

    description = "Adversarial training with noise on hidden layers' outputs"
    paper = "Qian et al., TOIS 2023"

    Config = RATConfig

    @classmethod
    def supports(cls, victim_cls: type) -> bool:
        return issubclass(victim_cls, PairwiseVictim) and hasattr(victim_cls, "hidden_layers")

    def apply(self, victim):
        victim.objective = RATObjective(self.config)
        return victim
