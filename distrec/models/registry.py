"""The victim registry: ``create_victim(name, **config)``, in the manner of timm's ``create_model``."""

from __future__ import annotations

from collections.abc import Callable

_VICTIMS: dict[str, type] = {}


def register_victim(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        if name in _VICTIMS:
            raise ValueError(f"victim {name!r} is already registered")
        cls.name = name
        _VICTIMS[name] = cls
        return cls

    return deco


def list_victims() -> list[str]:
    return sorted(_VICTIMS)


def victim_class(name: str) -> type:
    if name not in _VICTIMS:
        raise ValueError(f"unknown victim {name!r}; registered: {list_victims()}")
    return _VICTIMS[name]


def create_victim(name: str, n_users: int, n_items: int, **config):
    """Build victim ``name`` for ``n_users`` x ``n_items``; unknown config keys are an error naming them."""
    return victim_class(name)(n_users, n_items, **config)
