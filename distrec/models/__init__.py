"""Victim recommenders behind one registry."""

from distrec.models import deepcf, itemknn, lightgcn, mf_bpr, neumf, sasrec, sgl, simgcl, visual, wrmf  # noqa: F401  (registration)
from distrec.models.base import Victim
from distrec.models.registry import create_victim, list_victims

__all__ = ["Victim", "create_victim", "list_victims"]
