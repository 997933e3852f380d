"""Attacks. Injective poisoning (this package): the threat model, heuristic and gradient attacks, SharpAP;
adversarial ranking on retrieval models: :mod:`distrec.attacks.ranking`."""

from distrec.attacks import dada, heuristics, imported, revadv  # noqa: F401  (registration)
from distrec.attacks.registry import attack_class, create_attack, list_attacks
from distrec.attacks.sharpap import SharpAP

__all__ = ["SharpAP", "attack_class", "create_attack", "list_attacks"]
