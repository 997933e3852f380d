"""PamaCF, personalised-magnitude adversarial collaborative filtering (Zhang, Cao, Wu, Sun, Shen, Cheng,
NeurIPS 2024): APR's adversarial term with a perturbation magnitude per user set from the scale of its
embedding, rho_u = rho * beta * sigmoid(||u||^2 / mean ||u'||^2 - 1) over the batch's users (the reference
code's ``_get_user_eps``), so that users with large embeddings, whom the paper shows an attack moves least
per unit of perturbation, are trained against larger perturbations.

The reference code perturbs each example's embeddings; ours perturbs the embedding tables as APR does, user
rows by their user's rho_u and item rows by the mean rho_u of the batch examples that hold the item."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distrec.config import Positive
from distrec.defenses.apr import APR, APRConfig, APRObjective
from distrec.defenses.registry import register_defense
from distrec.models.trainer import PairwiseVictim


@dataclass
class PamaCFConfig(APRConfig):
    """``eps``: rho; ``adv_reg``: lambda; ``user_scale``: beta, the scale of the personal magnitudes
    (the reference code's ``user_lmb``)."""

    user_scale: Positive = 1.0


def personal_magnitudes(user_rows: torch.Tensor, scale: float) -> torch.Tensor:
    """beta * sigmoid(||u||^2 / mean ||u||^2 - 1) for each row of ``user_rows`` (the batch's users)."""
    sq = user_rows.detach().pow(2).sum(1)
    return scale * torch.sigmoid(sq / sq.mean().clamp_min(1e-12) - 1)


def row_means(index: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    """Mean of ``values`` per row id in ``index`` (1 where a row is not in the batch)."""
    total = torch.zeros(n, dtype=values.dtype, device=values.device).index_add_(0, index, values)
    count = torch.zeros(n, dtype=values.dtype, device=values.device).index_add_(0, index, torch.ones_like(values))
    return torch.where(count > 0, total / count.clamp_min(1), torch.ones_like(total))


class PamaCFObjective(APRObjective):
    def perturbation(self, model: PairwiseVictim, params, users, pos, neg) -> list[torch.Tensor]:
        """APR's Delta_adv with each table's user rows scaled by their rho_u / rho and its item rows by the
        mean rho_u / rho of the examples holding the item (rho_u from that table's user rows)."""
        deltas = super().perturbation(model, params, users, pos, neg)
        n_users, n_items = model.n_users, model.n_items
        negs = neg.reshape(len(users), -1)
        items = torch.cat([pos, negs.reshape(-1)])
        for k, p in enumerate(params):
            if p.shape[0] not in (n_users, n_items, n_users + n_items):
                continue
            user_rows = p[:n_users] if p.shape[0] != n_items else None
            rho_u = personal_magnitudes(
                user_rows[users] if user_rows is not None else model_user_rows(model, users), self.config.user_scale
            )
            item_scale = row_means(items, torch.cat([rho_u, rho_u.repeat_interleave(negs.shape[1])]), n_items)
            if p.shape[0] == n_users:
                deltas[k] = deltas[k] * row_means(users, rho_u, n_users)[:, None]
            elif p.shape[0] == n_items:
                deltas[k] = deltas[k] * item_scale[:, None]
            else:
                deltas[k] = deltas[k] * torch.cat([row_means(users, rho_u, n_users), item_scale])[:, None]
        return deltas


def model_user_rows(model: PairwiseVictim, users: torch.Tensor) -> torch.Tensor:
    """The batch users' rows of the model's first user-sized table (for an item-only table)."""
    table = next(
        p for p in model.embedding_parameters() if p.shape[0] in (model.n_users, model.n_users + model.n_items)
    )
    return table[users]


@register_defense("pamacf")
class PamaCF(APR):
    """Trains the victim with :class:`PamaCFObjective`.

    Example::

        defense = create_defense("pamacf", eps=0.5, adv_reg=1.0)
        defense.apply(victim).fit(data)
    """

    description = "APR with per-user perturbation magnitudes"
    paper = "Zhang et al., NeurIPS 2024"

    Config = PamaCFConfig

    def apply(self, victim):
        victim.objective = PamaCFObjective(self.config)
        return victim
