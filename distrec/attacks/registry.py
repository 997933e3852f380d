"""The attack registry: ``create_attack(name, **config)``, in the manner of timm's ``create_model``."""

from __future__ import annotations

from distrec.registry import Registry

ATTACKS = Registry("attack")
register_attack = ATTACKS.register
list_attacks = ATTACKS.names
attack_class = ATTACKS.get


def create_attack(name: str, **config):
    """Build attack ``name``; unknown config keys are an error naming them."""
    return attack_class(name)(**config)
