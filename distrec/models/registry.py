"""The victim registry: ``create_victim(name, **config)``, in the manner of timm's ``create_model``."""

from __future__ import annotations

from distrec.registry import Registry

VICTIMS = Registry("victim")
register_victim = VICTIMS.register
list_victims = VICTIMS.names
victim_class = VICTIMS.get


def create_victim(name: str, n_users: int, n_items: int, **config):
    """Build victim ``name`` for ``n_users`` x ``n_items``; unknown config keys are an error naming them."""
    return victim_class(name)(n_users, n_items, **config)
