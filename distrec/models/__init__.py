"""Victim recommenders behind one registry."""

from distrec.models import mf_bpr  # noqa: F401  (registers "bpr")
from distrec.models.base import Victim
from distrec.models.registry import create_victim, list_victims

__all__ = ["Victim", "create_victim", "list_victims"]
