"""Training losses shared by the victims."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """BPR-Opt (Rendle et al. 2009, eq. 6, without the prior): mean of -ln sigmoid(x_ui - x_uj)."""
    return -F.logsigmoid(pos_scores - neg_scores).mean()


def l2_reg(*embeddings: torch.Tensor) -> torch.Tensor:
    """Half the squared L2 norm of the batch's embeddings, averaged over the batch."""
    return 0.5 * sum(e.pow(2).sum() for e in embeddings) / embeddings[0].shape[0]


def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE between two views (SGL eq. 10, SimGCL eq. 2), in-batch negatives:
    -mean_i log( exp(s(z1_i, z2_i)/t) / sum_j exp(s(z1_i, z2_j)/t) ), s = cosine similarity."""
    z1, z2 = F.normalize(z1, dim=-1) / temperature, F.normalize(z2, dim=-1)  # scale n rows, not n^2 logits
    logits = z1 @ z2.T
    return F.cross_entropy(logits, torch.arange(len(z1), device=z1.device))
