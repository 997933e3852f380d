"""VAT: vulnerability-aware adversarial training (Zhang et al., RecSys 2024; a baseline of RAWP-FT,
docs/methods.md section 5). APR with a perturbation size per user:
Delta_u = rho g(L_u) Gamma_u / ||Gamma_u|| with g(L_u) = sigmoid((mean L - L_u) / mean L), so that the users
the model fits best (lowest training loss, the ones a poisoning attack moves most easily) get the largest
perturbation. L_u is the user's mean loss over the batch and mean L the batch's; the user rows of the
embedding tables are scaled by g, item rows keep rho (the paper's Delta_{u,i} is per interaction; scaling
the user's side is our reading)."""

from __future__ import annotations

import torch

from distrec.defenses.apr import APR, APRConfig, APRObjective
from distrec.defenses.registry import register_defense
from distrec.models.trainer import PairwiseVictim


def vulnerability(losses: torch.Tensor, users: torch.Tensor, n_users: int) -> torch.Tensor:
    """g(L_u) for every row ``0..n_users-1`` (1 for users not in the batch; they have no gradient anyway)."""
    total = torch.zeros(n_users, dtype=losses.dtype, device=losses.device).index_add_(0, users, losses)
    count = torch.zeros(n_users, dtype=losses.dtype, device=losses.device).index_add_(0, users, torch.ones_like(losses))
    per_user = total / count.clamp_min(1)
    mean = losses.mean().clamp_min(1e-12)
    g = torch.sigmoid((mean - per_user) / mean)
    return torch.where(count > 0, g, torch.ones_like(g))


class VATObjective(APRObjective):
    def perturbation(self, model: PairwiseVictim, params, users, pos, neg) -> list[torch.Tensor]:
        deltas = super().perturbation(model, params, users, pos, neg)
        with torch.no_grad():
            g = vulnerability(model.example_losses(users, pos, neg), users, model.n_users)
        user_tables = {id(p) for p in model.user_embedding_parameters()}
        for k, p in enumerate(params):
            if id(p) in user_tables:
                deltas[k] = torch.cat([deltas[k][: model.n_users] * g[:, None], deltas[k][model.n_users :]])
        return deltas


@register_defense("vat")
class VAT(APR):
    """Trains the victim with :class:`VATObjective` (``eps`` is rho).

    Example::

        defense = create_defense("vat", eps=0.5, adv_reg=1.0)
        defense.apply(victim).fit(data)
    """

    description = "Vulnerability-aware adversarial training: APR with a perturbation size per user"
    paper = "Zhang et al., RecSys 2024"

    Config = APRConfig

    @classmethod
    def supports(cls, victim_cls: type) -> bool:
        return (
            super().supports(victim_cls)
            and hasattr(victim_cls, "example_losses")
            and hasattr(victim_cls, "user_embedding_parameters")
        )

    def apply(self, victim):
        victim.objective = VATObjective(self.config)
        return victim
