"""The victim registry: ``create_victim(name, **config)``, in the manner of timm's ``create_model``."""

from __future__ import annotations

from distrec.registry import Registry

VICTIMS = Registry("victim")
register_victim = VICTIMS.register
list_victims = VICTIMS.names
victim_class = VICTIMS.get


def registered_victim(label: str, config: dict) -> tuple[str, dict]:
    """A study's victim entry ``label: config``: the registered victim it builds (``config['victim']``, or the
    label itself) and the config without that key; two entries may build one victim with other settings
    (``gmf: {victim: neumf, branch: gmf}``)."""
    config = dict(config or {})
    return config.pop("victim", label), config


def create_victim(name: str, n_users: int, n_items: int, **config):
    """Build victim ``name`` for ``n_users`` x ``n_items``; unknown config keys are an error naming them."""
    return victim_class(name)(n_users, n_items, **config)
