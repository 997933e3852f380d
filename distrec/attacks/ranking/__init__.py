"""Adversarial ranking attacks on metric-learning retrieval (AdvRank): objectives, trial selection, PGD."""

from distrec.attacks.pgd import RankPGD, advrank_schedule
from distrec.attacks.ranking.objectives import (
    CandidateObjective,
    EmbeddingShiftObjective,
    QueryObjective,
    RankingObjective,
)
from distrec.attacks.ranking.trials import ATTACKS, RankAttackSpec, Trials, build_objective, parse_attack, select_trials

__all__ = [
    "ATTACKS",
    "CandidateObjective",
    "EmbeddingShiftObjective",
    "QueryObjective",
    "RankAttackSpec",
    "RankPGD",
    "RankingObjective",
    "Trials",
    "advrank_schedule",
    "build_objective",
    "parse_attack",
    "select_trials",
]
