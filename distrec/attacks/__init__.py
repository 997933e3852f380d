"""Attacks. Injective poisoning (this package): the threat model, heuristic and gradient attacks, SharpAP;
backdoors in pre-trained sequential recommenders: :mod:`distrec.attacks.backdoor`; adversarial ranking
on retrieval models: :mod:`distrec.attacks.ranking`."""

from distrec.attacks import backdoor, dada, heuristics, imported, pga, rapu, revadv  # noqa: F401  (registration)
from distrec.attacks.registry import attack_class, create_attack, list_attacks, list_attacks_of_kind
from distrec.attacks.sharpap import SharpAP

__all__ = ["SharpAP", "attack_class", "create_attack", "list_attacks", "list_attacks_of_kind"]
