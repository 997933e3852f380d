"""Spectral signatures (Tran, Li and Madry, NeurIPS 2018, Algorithm 1): centre the representations a model
trained on the data gives its users, project them on the top singular vector, and score each user by the
squared projection; poisoned examples leave a trace along that direction."""

from __future__ import annotations

import numpy as np

from distrec.defenses.registry import register_defense
from distrec.defenses.screening import DataDefense


def spectral_scores(embeddings: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """tau_u = ((R_u - mean R) . v)^2 for the ``rows`` used (v: top right singular vector of the centred
    R); 0 elsewhere."""
    r = embeddings[rows] - embeddings[rows].mean(0)
    _, _, vt = np.linalg.svd(r, full_matrices=False)
    out = np.zeros(len(embeddings))
    out[rows] = (r @ vt[0]) ** 2
    return out


@register_defense("spectral")
class SpectralSignatures(DataDefense):
    """Trains the column's victim on the data and scores its user embeddings.

    Example::

        detector = create_defense("spectral", fpr=0.05)
        screening = detector.screen(poisoned, reference=clean, fit=fit_victim, seed=0)
    """

    description = "Detector: large projections of user embeddings on their top singular vector"
    paper = "Tran, Li and Madry, NeurIPS 2018"

    @classmethod
    def supports(cls, victim_cls: type) -> bool:
        return hasattr(victim_cls, "user_embeddings")

    def scores(self, train, fit, seed):
        embeddings = fit(train).user_embeddings().cpu().numpy().astype(np.float64)
        return spectral_scores(embeddings, np.flatnonzero(train.degrees() > 0))
