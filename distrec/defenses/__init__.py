"""Defenses against the attacks in :mod:`distrec.attacks`."""

from distrec.defenses.est import EmbeddingShiftingTraining

__all__ = ["EmbeddingShiftingTraining"]
