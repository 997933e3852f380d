"""The outer loop shared by gradient attacks (RevAdv, DADA): fake profiles as a continuous matrix,
updated with the poison gradient of a surrogate retrained from scratch at every outer step."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from distrec.attacks.base import Attack, AttackContext
from distrec.attacks.objectives import ScoreBatch
from distrec.attacks.profiles import project_profiles
from distrec.attacks.surrogates import Factors
from distrec.metrics.targets import target_metrics

LossFn = Callable[[Factors], tuple[float, Factors]]
WorstCase = Callable[[Factors, Factors, LossFn, object], tuple[float, Factors, dict]]


@dataclass
class GradientAttackConfig:
    """``outer_steps`` poison updates; SGD with ``lr`` and ``momentum`` on the row-normalised gradient;
    the returned profiles are those whose surrogate reached the highest T-HR@``select_k``."""

    outer_steps: int = 30
    lr: float = 1.0
    momentum: float = 0.9
    select_k: int = 50
    chunk_users: int = 2048


def initial_profiles(ctx: AttackContext) -> torch.Tensor:
    """Fake profiles copied from randomly drawn real users with at most ``n_filler`` items (all users
    when none qualifies), projected onto the budget (RevAdv's initialisation)."""
    rng = np.random.default_rng(ctx.seed)
    degrees = ctx.train.degrees()
    pool = np.flatnonzero((degrees > 0) & (degrees <= ctx.budget.n_filler))
    if len(pool) == 0:
        pool = np.flatnonzero(degrees > 0)
    chosen = rng.choice(pool, ctx.budget.n_fake, replace=len(pool) < ctx.budget.n_fake)
    values = torch.as_tensor(rng.random((ctx.budget.n_fake, ctx.n_items)) * 0.5, dtype=torch.float32)
    r, c = ctx.train.rows(chosen)
    values[torch.as_tensor(r), torch.as_tensor(c)] += 1.0
    return project_profiles(values, ctx.targets, ctx.budget.n_filler)


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Each row of ``x`` divided by its norm (rows of zeros stay zero)."""
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


class GradientAttack(Attack):
    """Base of the gradient attacks: subclasses give ``objective(batch) -> loss`` to minimise.

    ``penalty`` (set by who crafts, e.g. a detector's differentiable suspicion of the fakes:
    :class:`distrec.defenses.adaptive.DetectorPenalty`): ``penalty(fake) -> (gradient, record)``; each outer
    step then moves the fakes along ``g / |g| + penalty_weight p / |p|`` (row-normalised poison gradient g
    and penalty gradient p), so the weight is the penalty's share of the step."""

    Config = GradientAttackConfig
    uses_surrogate = True
    penalty: Callable[[torch.Tensor], tuple[torch.Tensor, dict]] | None = None
    penalty_weight: float = 1.0

    def objective(self, batch: ScoreBatch) -> torch.Tensor:
        raise NotImplementedError

    def user_weights(self, factors: Factors, ctx: AttackContext) -> torch.Tensor | None:
        """A constant weight per real user in the objective (``None``: all 1)."""
        return None

    def project(self, values: torch.Tensor, ctx: AttackContext) -> torch.Tensor:
        """The continuous fake data onto the budget (RevAdv's top-filler projection)."""
        return project_profiles(values, ctx.targets, ctx.budget.n_filler)

    def finalize(self, fake: torch.Tensor, ctx: AttackContext) -> torch.Tensor:
        """The profiles the attack returns from the best iterate (already binary after :meth:`project`)."""
        return fake

    def attack_loss(self, factors: Factors, ctx: AttackContext) -> tuple[float, Factors]:
        """The objective over all real users, in chunks, and its gradient w.r.t. the factors."""
        users = factors.users.detach().requires_grad_()
        items = factors.items.detach().requires_grad_()
        targets = torch.as_tensor(ctx.targets, device=items.device)
        weights = self.user_weights(factors, ctx)
        total = 0.0
        chunk = self.config.chunk_users
        for s in range(0, users.shape[0], chunk):
            ids = np.arange(s, min(s + chunk, users.shape[0]))
            r, c = ctx.train.rows(ids)
            w = None if weights is None else weights[s : s + len(ids)]
            batch = ScoreBatch(
                users[s : s + len(ids)] @ items.T,
                torch.as_tensor(r, device=items.device),
                torch.as_tensor(c, device=items.device),
                targets,
                w,
            )
            loss = self.objective(batch)
            loss.backward()
            total += float(loss.detach())
        return total, Factors(users.grad, items.grad)

    def poison_gradient(
        self, fake: torch.Tensor, ctx: AttackContext, surrogate, worst_case: WorstCase | None = None
    ) -> tuple[torch.Tensor, dict]:
        """d L_atk(theta*(X) [+ e]) / dX at the binary profiles ``fake``, and a record of the step."""
        x = fake.to(ctx.device).clone().requires_grad_()
        trained = surrogate.fit(x)  # the surrogate's own seed (run_attack defaults it to the attack's)
        params = Factors(trained.users.detach(), trained.items.detach())
        loss, grads = self.attack_loss(params, ctx)
        record = {"attack_loss": loss}
        if worst_case is not None:
            loss, grads, info = worst_case(params, grads, lambda f: self.attack_loss(f, ctx), surrogate)
            record.update(info, worst_case_loss=loss)
        outputs = [(t, g) for t, g in ((trained.users, grads.users), (trained.items, grads.items)) if t.requires_grad]
        torch.autograd.backward([t for t, _ in outputs], [g for _, g in outputs])
        k = self.config.select_k
        metrics = target_metrics(
            lambda u: params.users[u] @ params.items.T,
            ctx.train,
            ctx.targets,
            np.arange(ctx.train.n_users),
            (k,),
            device=params.items.device,
        )
        record[f"surrogate_t_hr@{k}"] = metrics[f"t_hr@{k}"]
        return x.grad.cpu(), record

    def craft(
        self, ctx: AttackContext, surrogate=None, worst_case: WorstCase | None = None, gradient_fn=None
    ) -> torch.Tensor:
        """The outer loop. ``gradient_fn(fake) -> (grad, record)`` replaces the poison gradient of
        ``surrogate`` (e.g. a population of surrogates on Ray); ``worst_case`` is SharpAP's hook."""
        if surrogate is None and gradient_fn is None:
            raise ValueError(f"{self.label}: a gradient attack needs a surrogate")
        if gradient_fn is None:
            gradient_fn = lambda fake: self.poison_gradient(fake, ctx, surrogate, worst_case)  # noqa: E731
        cfg = self.config
        fake = initial_profiles(ctx)
        state = fake.clone()
        opt = torch.optim.SGD([state], lr=cfg.lr, momentum=cfg.momentum)
        targets = torch.as_tensor(ctx.targets)
        best, best_score, self.history = fake, -1.0, []
        metric = f"surrogate_t_hr@{cfg.select_k}"
        bar = tqdm(range(cfg.outer_steps + 1), desc=f"{self.label} craft", disable=not ctx.progress, unit="step")
        for step in bar:
            t0 = time.perf_counter()
            grad, record = gradient_fn(fake)
            if self.penalty is not None:
                penalty_grad, penalty_record = self.penalty(fake)
                record.update(penalty_record)
                grad = unit_rows(grad) + self.penalty_weight * unit_rows(penalty_grad)
            record.update(step=step, seconds=round(time.perf_counter() - t0, 3))
            self.history.append(record)
            if record[metric] > best_score:
                best, best_score = fake, record[metric]
            bar.set_postfix(loss=f"{record['attack_loss']:.4g}", **{metric: f"{record[metric]:.4f}"})
            if step == cfg.outer_steps:
                break
            grad[:, targets] = 0.0
            state.grad = unit_rows(grad)
            opt.step()
            new = self.project(state, ctx)
            record["changed"] = int((new != fake).sum())
            fake = new
            state.data.copy_(fake)
        return self.finalize(best, ctx)
