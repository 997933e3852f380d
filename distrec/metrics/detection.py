"""How well a data defense separates fake from real users, scored after the fact with labels the
defense never saw (docs/methods.md section 2b)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def detection_metrics(scores: np.ndarray, removed: np.ndarray, is_fake: np.ndarray) -> dict:
    """ROC AUC of the scores (users with a score), precision / recall / F1 of the removal, and the share
    of real users removed. AUC is None where one class is missing (no fake users: the no-attack row)."""
    scored = ~np.isnan(scores)
    fake, real = is_fake.astype(bool), ~is_fake.astype(bool)
    both = fake[scored].any() and real[scored].any()
    tp = int((removed & fake).sum())
    precision = tp / removed.sum() if removed.any() else 0.0
    recall = tp / fake.sum() if fake.any() else None
    f1 = (
        2 * precision * recall / (precision + recall)
        if recall and precision + recall > 0
        else (0.0 if recall is not None else None)
    )
    return {
        "auc": float(roc_auc_score(fake[scored], scores[scored])) if both else None,
        "precision": float(precision),
        "recall": None if recall is None else float(recall),
        "f1": None if f1 is None else float(f1),
        "removed": int(removed.sum()),
        "fake_removed": tp,
        "real_removed_share": float((removed & real).sum() / max(real.sum(), 1)),
    }
