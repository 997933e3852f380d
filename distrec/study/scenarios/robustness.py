"""Robustness of deep recommenders to weight perturbations (RAWP-FT, methods.md section 5): every victim,
plain or trained with a defense (``awp``, ``rawp``, ``apr``), measured by the NCF protocol (held-out item
among the stored ``test_negatives``) before and under the weight attack (FGSM / PGD at each eps).

Stages: ``train`` (column x seed; checkpointed) -> ``cell`` (row x column x seed). Rows ``no attack``,
``<fgsm | pgd> eps=<eps>``; columns ``victim`` or ``victim+defense``. Metrics: HR@10 and NDCG@10 of the
sampled protocol (and full-ranking Recall/NDCG@20 in the no-attack row with ``full_ranking``)."""

from __future__ import annotations

import time
from dataclasses import field

import pydantic
import torch

from distrec.attacks.weights import WeightAttackConfig, attacked_scores
from distrec.config import ConfigError
from distrec.content_id import content_id
from distrec.data.dataset import InMemoryDataset, PreparedDataset
from distrec.data.matrix import UserItemCSR
from distrec.data.spec import DatasetSpec, check_dataset_spec, materialise_dataset
from distrec.evaluation.ranking import full_ranking_metrics
from distrec.evaluation.sampled import candidates, sampled_metrics
from distrec.models.base import Victim
from distrec.models.registry import list_victims, victim_class
from distrec.study.columns import check_columns, check_victims_and_defenses, default_columns, fit_column_victim
from distrec.study.engine import StageResources, Unit
from distrec.study.scenario import Scenario, register_scenario

FORBID = pydantic.ConfigDict(extra="forbid")
NO_ATTACK = "no attack"


@pydantic.dataclasses.dataclass(config=FORBID)
class WeightAttackRows:
    """One attack method at several ``eps`` (relative to each weight row's norm)."""

    method: str = "fgsm"
    eps: list[float] = field(default_factory=lambda: [0.001, 0.002, 0.004, 0.005, 0.008, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1])
    steps: int = 10
    alpha: float | None = None


@pydantic.dataclasses.dataclass(config=FORBID)
class RobustnessConfig:
    dataset: DatasetSpec
    victims: dict[str, dict]
    defenses: dict[str, dict] = field(default_factory=dict)
    columns: list[str] | None = None
    attacks: list[WeightAttackRows] = field(default_factory=lambda: [WeightAttackRows()])
    batch_users: int = 1
    full_ranking: bool = False
    seeds: list[int] = field(default_factory=lambda: [0])
    metric: str = "hr@10"
    resources: dict[str, StageResources] = field(default_factory=dict)


@register_scenario("robustness")
class Robustness(Scenario):
    Config = RobustnessConfig
    stages = ("train", "cell")
    extra_metrics = ("ndcg@10",)

    def check(self) -> None:
        cfg, src = self.config, self.source
        check_dataset_spec(cfg.dataset, src)
        if cfg.dataset.path is None and not cfg.dataset.prepare.get("test_negatives"):
            raise ConfigError(f"{src}: dataset.prepare.test_negatives: the sampled protocol needs stored negatives (e.g. 99, with split: loo)")
        check_victims_and_defenses(cfg.victims, cfg.defenses, src)
        for name in cfg.victims:
            if not hasattr(victim_class(name), "weight_matrices"):
                able = [v for v in list_victims() if hasattr(victim_class(v), "weight_matrices")]
                raise ConfigError(f"{src}: victims.{name}: the weight attack needs a victim with weight matrices: {', '.join(able)}")
        check_columns(self.columns(), cfg.victims, cfg.defenses, src)
        for i, a in enumerate(cfg.attacks):
            try:
                for eps in a.eps:
                    WeightAttackConfig(eps=eps, method=a.method, steps=a.steps, alpha=a.alpha, batch_users=cfg.batch_users)
            except ValueError as exc:
                raise ConfigError(f"{src}: attacks.{i}: {exc}") from None
        if cfg.metric not in ("hr@10", "ndcg@10"):
            raise ConfigError(f"{src}: metric: {cfg.metric!r} is not one of hr@10, ndcg@10")

    def columns(self) -> list[str]:
        return list(self.config.columns) if self.config.columns is not None else default_columns(self.config.victims, self.config.defenses)

    def protocol(self) -> str:
        return (
            "NCF leave-one-out: the held-out item ranked among the stored test negatives; weight attack per "
            + f"{self.config.batch_users} test user(s), eps relative to each weight row's norm (methods.md section 5)"
        )

    def baseline(self, row: str) -> str | None:
        return NO_ATTACK

    def plan(self, out: str) -> list[Unit]:
        cfg = self.config
        data = materialise_dataset(cfg.dataset, out)
        if not data.has("test_negatives"):
            raise ConfigError(f"{self.source}: dataset: {data.uri} has no test_negatives (prepare with split: loo, test_negatives: 99)")
        rows = [(NO_ATTACK, None)] + [(f"{a.method} eps={eps:g}", {"method": a.method, "eps": eps, "steps": a.steps, "alpha": a.alpha}) for a in cfg.attacks for eps in a.eps]
        units = []
        for column in self.columns():
            victim, _, defense = column.partition("+")
            for seed in cfg.seeds:
                config = dict(cfg.victims[victim], seed=seed)
                tid = content_id(data.uri, victim, config, defense or None, cfg.defenses.get(defense))
                units.append(
                    Unit(
                        "train",
                        tid,
                        {"data": data.uri, "victim": victim, "config": config, "defense": defense or None, "defense_config": cfg.defenses.get(defense, {})},
                        label=f"{column} seed {seed}",
                    )
                )
                for label, attack in rows:
                    payload = {
                        "data": data.uri,
                        "row": label,
                        "column": column,
                        "seed": seed,
                        "attack": attack,
                        "batch_users": cfg.batch_users,
                        "full": cfg.full_ranking and attack is None,
                    }
                    units.append(Unit("cell", content_id(tid, attack, cfg.batch_users, payload["full"]), payload, deps={"model": tid}, label=f"{label} | {column} | seed {seed}"))
        return units

    def run(self, unit: Unit, deps: dict, ctx) -> dict:
        p = unit.payload
        data = ctx.cached(p["data"], lambda: InMemoryDataset.load(PreparedDataset(p["data"])))
        if unit.stage == "train":
            t0 = time.perf_counter()

            def train() -> Victim:
                return fit_column_victim(p["victim"], p["config"], p["defense"], p["defense_config"], data)

            _, restored = ctx.checkpoint("model", train, lambda m, d: m.save(d), lambda d: Victim.load(d).attach(data))
            return {"model_uri": f"{ctx.out}/checkpoints/{ctx.unit.id}/model", "fit_seconds": round(time.perf_counter() - t0, 3), "restored": restored}
        model = ctx.cached(deps["model"]["model_uri"], lambda: _load(deps["model"]["model_uri"], data)).eval()
        users, items = ctx.cached(f"{p['data']}/candidates", lambda: candidates(data.table("test"), data.table("test_negatives")))
        if p["attack"] is None:
            metrics = sampled_metrics(model.score_pairs, users, items)
        else:
            a = p["attack"]
            config = WeightAttackConfig(eps=a["eps"], method=a["method"], steps=a["steps"], alpha=a["alpha"], batch_users=p["batch_users"])
            scores = attacked_scores(model, config, torch.as_tensor(users), torch.as_tensor(items))
            metrics = sampled_metrics(lambda u, i, s=scores: s, users, items, chunk_users=len(users))
        if p["full"]:
            train = UserItemCSR.from_table(data.table("train"), data.n_users, data.n_items)
            test = UserItemCSR.from_table(data.table("test"), data.n_users, data.n_items)
            with torch.no_grad():
                metrics.update({k: v for k, v in full_ranking_metrics(model.score, train, test, (20,)).items() if k != "n_users"})
        return {"row": p["row"], "column": p["column"], "seed": p["seed"], "config": {"attack": p["attack"], "batch_users": p["batch_users"]}, "metrics": metrics}


def _load(uri: str, data) -> Victim:
    import tempfile

    from distrec.distributed import storage

    with tempfile.TemporaryDirectory() as tmp:
        return Victim.load(storage.download(uri, tmp)).attach(data)
