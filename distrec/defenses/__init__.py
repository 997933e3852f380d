"""Defenses against the attacks in :mod:`distrec.attacks`, registered by name (``create_defense``)."""

from distrec.defenses import (  # noqa: F401  (registration)
    apr,
    awp,
    est,
    fap,
    filters,
    pamacf,
    pca_users,
    profile_classifier,
    rat,
    rawp_ft,
    sam,
    spectral,
    vat,
    vit_defense,
)
from distrec.defenses.est import EmbeddingShiftingTraining
from distrec.defenses.registry import create_defense, defense_class, list_defenses

__all__ = ["EmbeddingShiftingTraining", "create_defense", "defense_class", "list_defenses"]
