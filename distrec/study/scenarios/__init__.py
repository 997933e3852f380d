"""The method families a study can run, one module each (registration on import)."""

from distrec.study.scenarios import backdoor, item_image, poisoning, ranking, robustness  # noqa: F401
