"""Training losses shared by the victims."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pair_scores(u: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dot scores x_ui ``[B]`` and x_uj: ``[B]`` for one negative a row (``j [B, d]``), ``[B, n]`` for n
    (``j [B, n, d]``)."""
    neg = (u.unsqueeze(1) * j).sum(-1) if j.dim() == 3 else (u * j).sum(-1)
    return (u * i).sum(-1), neg


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """BPR-Opt (Rendle et al. 2009, eq. 6, without the prior): mean of -ln sigmoid(x_ui - x_uj), over
    every (positive, negative) pair when ``neg_scores`` is ``[B, n]``."""
    if neg_scores.dim() > pos_scores.dim():
        pos_scores = pos_scores.unsqueeze(-1)
    return -F.logsigmoid(pos_scores - neg_scores).mean()


def sampled_softmax_loss(
    u: torch.Tensor, i: torch.Tensor, j: torch.Tensor, temperature: float, hits: torch.Tensor | None = None
) -> torch.Tensor:
    """Sampled softmax (SSM, Wu et al., TOIS 2024, arXiv 2201.02327): mean over the batch of
    -log( exp(s(u,i)/t) / (exp(s(u,i)/t) + sum_j exp(s(u,j)/t)) ), s = cosine similarity, j the row's
    negatives (``j [B, n, d]``) or negatives shared by every row (``j [1, n, d]``, one matrix product);
    ``hits [B, n]`` marks negatives left out of a row's sum (a shared negative that is the row's positive)."""
    u, i, j = F.normalize(u, dim=-1), F.normalize(i, dim=-1), F.normalize(j, dim=-1)
    neg = u @ j[0].T if j.shape[0] == 1 else (u.unsqueeze(1) * j).sum(-1)
    if hits is not None:
        neg = neg.masked_fill(hits, float("-inf"))
    logits = torch.cat([(u * i).sum(-1, keepdim=True), neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(u), dtype=torch.long, device=u.device))


def l2_reg(*embeddings: torch.Tensor) -> torch.Tensor:
    """Half the squared L2 norm of the batch's embeddings, averaged over the batch (over the rows and
    their negatives for ``[B, n, d]``, so n negatives weigh as one)."""
    return 0.5 * sum(e.pow(2).sum(-1).mean() for e in embeddings)


def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE between two views (SGL eq. 10, SimGCL eq. 2), in-batch negatives:
    -mean_i log( exp(s(z1_i, z2_i)/t) / sum_j exp(s(z1_i, z2_j)/t) ), s = cosine similarity."""
    z1, z2 = F.normalize(z1, dim=-1) / temperature, F.normalize(z2, dim=-1)  # scale n rows, not n^2 logits
    logits = z1 @ z2.T
    return F.cross_entropy(logits, torch.arange(len(z1), device=z1.device))
