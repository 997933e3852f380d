"""The defense registry: ``create_defense(name, **config)``, in the manner of timm's ``create_model``.

A defense is ``kind`` ``training`` (it changes how a victim is trained: APR) or ``deployment`` (it
sits in front of a trained model: image filters, detectors); ``supports(victim_cls)`` says which
victims it can be applied to, so a study can reject an impossible column before it starts."""

from __future__ import annotations

import dataclasses

from distrec.registry import Registry

DEFENSES = Registry("defense")
register_defense = DEFENSES.register
list_defenses = DEFENSES.names
defense_class = DEFENSES.get


class Defense:
    """A defense configured by the dataclass ``Config`` (its fields are the keyword arguments)."""

    name = "defense"
    kind = "training"
    Config: type

    def __init__(self, **config):
        names = {f.name for f in dataclasses.fields(self.Config)}
        unknown = sorted(set(config) - names)
        if unknown:
            raise ValueError(f"defense {self.name}: unknown config key(s) {unknown}; valid keys are {sorted(names)}")
        self.config = self.Config(**config)

    @classmethod
    def supports(cls, victim_cls: type) -> bool:
        raise NotImplementedError

    @classmethod
    def supported_victims(cls) -> list[str]:
        from distrec.models.registry import VICTIMS

        return [n for n in VICTIMS.names() if cls.supports(VICTIMS.get(n))]

    def apply(self, victim):
        """The victim, defended (a training defense before ``fit``)."""
        raise NotImplementedError


def create_defense(name: str, **config) -> Defense:
    return defense_class(name)(**config)
