"""The attack registry: ``create_attack(name, **config)``, in the manner of timm's ``create_model``."""

from __future__ import annotations

from collections.abc import Callable

_ATTACKS: dict[str, type] = {}


def register_attack(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        if name in _ATTACKS:
            raise ValueError(f"attack {name!r} is already registered")
        cls.name = name
        _ATTACKS[name] = cls
        return cls

    return deco


def list_attacks() -> list[str]:
    return sorted(_ATTACKS)


def attack_class(name: str) -> type:
    if name not in _ATTACKS:
        raise ValueError(f"unknown attack {name!r}; registered: {list_attacks()}")
    return _ATTACKS[name]


def create_attack(name: str, **config):
    """Build attack ``name``; unknown config keys are an error naming them."""
    return attack_class(name)(**config)
