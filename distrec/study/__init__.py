"""The study engine (:mod:`.engine`), the scenario interface (:mod:`.scenario`) and the method families
that plug into it (:mod:`.scenarios`); ``run_study`` / ``load_study`` (:mod:`.runner`)."""

from distrec.study import scenarios  # noqa: F401  (registration)
from distrec.study.runner import load_study, run_study

__all__ = ["load_study", "run_study"]
