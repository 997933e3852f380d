"""The method families a study can run, one module each (registration on import)."""

from distrec.study.scenarios import poisoning, ranking  # noqa: F401
