"""The defense registry: ``create_defense(name, **config)``, in the manner of timm's ``create_model``.

A defense is one of three kinds, each one contract:

- ``data`` (:class:`~distrec.defenses.screening.DataDefense`): sees the training interactions (user and
  item ids only, never ``is_fake``), scores every user's suspicion, and removes the users above a threshold
  set on a clean reference before the victim is fit;
- ``training`` (:class:`TrainingDefense`): changes how a victim is fit (``apply(victim)`` before ``fit``);
- ``deployment`` (:class:`DeploymentDefense`): sits in front of a trained model (``apply(victim)`` gives
  the module that sees its inputs).

``supports(victim_cls)`` says which victims a defense can be applied to, so that a study rejects an
impossible column before it starts. A column chains them (:mod:`distrec.defenses.chain`)."""

from __future__ import annotations

from distrec.config import check
from distrec.registry import Registry

DEFENSES = Registry("defense")
register_defense = DEFENSES.register
list_defenses = DEFENSES.names
defense_class = DEFENSES.get
KINDS = ("data", "training", "deployment")


class Defense:
    """A defense configured by the dataclass ``Config`` (its fields are the keyword arguments)."""

    name = "defense"
    description: str = ""  # one line for ``distrec list``
    paper: str = ""
    kind = "training"
    Config: type

    def __init__(self, **config):
        self.config = check(self.Config, config, self.name)

    @classmethod
    def supports(cls, victim_cls: type) -> bool:
        raise NotImplementedError

    @classmethod
    def supported_victims(cls) -> list[str]:
        from distrec.models.registry import VICTIMS

        return [n for n in VICTIMS.names() if cls.supports(VICTIMS.get(n))]


class TrainingDefense(Defense):
    """Changes how a victim is fit."""

    kind = "training"

    def apply(self, victim):
        """The victim, set to train defended (called before ``fit``)."""
        raise NotImplementedError


class DeploymentDefense(Defense):
    """Sits in front of a trained model."""

    kind = "deployment"

    def apply(self, victim):
        """The module in front of ``victim`` (e.g. an image filter every item image passes)."""
        raise NotImplementedError


def create_defense(name: str, **config) -> Defense:
    return defense_class(name)(**config)


def defenses_of_kind(kind: str) -> list[str]:
    return [n for n in list_defenses() if defense_class(n).kind == kind]
