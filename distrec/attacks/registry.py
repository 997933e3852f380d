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


def list_attacks_of_kind(kind: str) -> list[str]:
    """The registered attacks of one ``kind``: ``injective`` (fake users) or ``backdoor`` (pre-training)."""
    return [n for n in list_attacks() if attack_class(n).kind == kind]
