"""Robustness of deep recommenders to weight perturbations (RAWP-FT, docs/methods.md section 5): every victim,
plain or trained with a defense (``awp``, ``rawp``, ``apr``), measured by the NCF protocol (held-out item
among the stored ``test_negatives``) before and under the weight attack (FGSM / PGD at each eps).

Stages: ``train`` (column x seed; checkpointed) -> ``cell`` (row x column x seed). ``eval_users`` limits
the attacked rows to a seeded sample of test users (the weight attack costs a gradient per user); the
no-attack row is measured on the same sample and, as ``all_hr@10`` / ``all_ndcg@10``, on every test user. Rows
``no attack``, ``<fgsm | pgd> eps=<eps>``; columns ``victim`` or ``victim+defense``. Metrics: HR@10 and NDCG@10 of the
sampled protocol (and the full-ranking ``full_hr@10``, ``full_ndcg@10``, ``full_recall@20``, ``full_ndcg@20`` in
the no-attack row with ``full_ranking``, every item but the user's training items ranked)."""

from __future__ import annotations

import time
from dataclasses import field
from typing import Literal

import numpy as np
import pydantic
import torch

from distrec.attacks.weights import METHODS, TARGETS, WeightAttackConfig, attacked_scores
from distrec.config import AtLeastOne, ConfigError, Fraction, Positive
from distrec.content_id import content_id
from distrec.data.dataset import InMemoryDataset, PreparedDataset
from distrec.data.matrix import UserItemCSR
from distrec.data.readers import WITH_TEST_NEGATIVES
from distrec.data.spec import DatasetSpec, check_dataset_spec, materialise_dataset
from distrec.defenses.chain import Column, fit_defended
from distrec.metrics.ranking import full_ranking_metrics
from distrec.metrics.sampled import candidates, sampled_metrics
from distrec.models.base import Victim
from distrec.models.registry import list_victims, victim_class
from distrec.models.trainer import PairwiseVictim
from distrec.study.columns import check_columns, check_victims_and_defenses, default_columns, victim_of
from distrec.study.engine import StageResources, Unit
from distrec.study.scenario import Scenario, register_scenario

FORBID = pydantic.ConfigDict(extra="forbid")
NO_ATTACK = "no attack"


@pydantic.dataclasses.dataclass(config=FORBID)
class WeightAttackRows:
    """One attack method at several ``eps`` (relative to each weight row's norm)."""

    method: Literal[METHODS] = "fgsm"
    eps: list[Fraction] = field(
        default_factory=lambda: [0.001, 0.002, 0.004, 0.005, 0.008, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1]
    )
    steps: AtLeastOne = 10
    alpha: Positive | None = None
    target: Literal[TARGETS] = "weights"

    def label(self, eps: float) -> str:
        return f"{self.method} eps={eps:g}" if self.target == "weights" else f"{self.target} {self.method} eps={eps:g}"


@pydantic.dataclasses.dataclass(config=FORBID)
class RobustnessConfig:
    dataset: DatasetSpec
    victims: dict[str, dict]
    defenses: dict[str, dict] = field(default_factory=dict)
    columns: list[str] | None = None
    attacks: list[WeightAttackRows] = field(default_factory=lambda: [WeightAttackRows()])
    batch_users: AtLeastOne = 1
    eval_users: AtLeastOne | None = None
    full_ranking: bool = False
    seeds: list[int] = field(default_factory=lambda: [0])
    metric: Literal["hr@10", "ndcg@10"] = "hr@10"
    resources: dict[str, StageResources] = field(default_factory=dict)


@register_scenario("robustness")
class Robustness(Scenario):
    description = "Weight-perturbation attacks on deep recommenders, and robust training (RAWP-FT, AWP, RAT)"
    paper = "Qian et al., KBS 2025"
    Config = RobustnessConfig
    stages = ("train", "cell")
    hosted = {"cell": "model"}
    extra_metrics = ("ndcg@10",)

    def check(self) -> None:
        cfg, src = self.config, self.source
        check_dataset_spec(cfg.dataset, src)
        given = cfg.dataset.path is not None or cfg.dataset.format in WITH_TEST_NEGATIVES
        if not given and not cfg.dataset.prepare.get("test_negatives"):
            raise ConfigError(
                f"{src}: dataset.prepare.test_negatives: the sampled protocol needs stored negatives (e.g. 99, with "
                "split: loo)"
            )
        check_victims_and_defenses(cfg.victims, cfg.defenses, src)
        for name in cfg.victims:
            if not hasattr(victim_of(cfg.victims, name), "weight_matrices"):
                able = [v for v in list_victims() if hasattr(victim_class(v), "weight_matrices")]
                raise ConfigError(
                    f"{src}: victims.{name}: the weight attack needs a victim with weight matrices: {', '.join(able)}"
                )
        check_columns(self.columns(), cfg.victims, cfg.defenses, src, kinds=("training",))
        for i, a in enumerate(cfg.attacks):
            if a.target == "embeddings":
                flat = [
                    v
                    for v in cfg.victims
                    if not hasattr(victim_of(cfg.victims, v), "embedding_parameters")
                    or victim_of(cfg.victims, v).embedding_parameters is PairwiseVictim.embedding_parameters
                ]
                if flat:
                    raise ConfigError(
                        f"{src}: attacks.{i}.target: embeddings: victims {', '.join(flat)} have no embedding tables"
                    )

    def summary(self, results: dict[str, dict]) -> dict:
        """Per column and seed: the training curve and, for RAWP-FT, every weight matrix's robustness
        score (higher = less robust), the fine-tuned matrices and the interpolation weight."""
        training = {}
        for r in results.values():
            if r["stage"] == "train":
                entry = {"fit_seconds": r["fit_seconds"], "epochs": r.get("epochs", [])}
                scores = [s for s in r.get("stages", []) if s["stage"] == "robustness"]
                if scores:
                    entry["layer_robustness"] = {s["layer"]: s["score"] for s in scores}
                    entry["fine_tuned"] = [s["layer"] for s in scores if s["fine_tuned"]]
                    entry["fine_tuning"] = [s for s in r["stages"] if s["stage"] == "fine_tune"]
                    entry["interpolation"] = next((s for s in r["stages"] if s["stage"] == "interpolation"), None)
                training[f"{r['column']} seed {r['seed']}"] = entry
        return {"training": dict(sorted(training.items()))}

    def columns(self) -> list[str]:
        return (
            list(self.config.columns)
            if self.config.columns is not None
            else default_columns(self.config.victims, self.config.defenses)
        )

    def protocol(self) -> str:
        cfg = self.config
        who = (
            "every test user" if cfg.eval_users is None else f"{cfg.eval_users} test users drawn with the dataset seed"
        )
        return (
            f"NCF leave-one-out on {who}: the held-out item ranked among the stored test negatives; weight attack per "
            + f"{cfg.batch_users} test user(s), eps relative to each weight row's norm (docs/methods.md section 5)"
        )

    def baseline(self, row: str) -> str | None:
        return NO_ATTACK

    def plan(self, out: str) -> list[Unit]:
        cfg = self.config
        data = materialise_dataset(cfg.dataset, out)
        if not data.has("test_negatives"):
            raise ConfigError(
                f"{self.source}: dataset: {data.uri} has no test_negatives (prepare with split: loo, test_negatives: "
                "99)"
            )
        rows = [(NO_ATTACK, None)] + [
            (a.label(eps), {"method": a.method, "eps": eps, "steps": a.steps, "alpha": a.alpha, "target": a.target})
            for a in cfg.attacks
            for eps in a.eps
        ]
        units = []
        for column in map(Column.parse, self.columns()):
            victim, column, chain = column.victim, str(column), {d: cfg.defenses[d] for d in column.defenses}
            for seed in cfg.seeds:
                config = dict(cfg.victims[victim], seed=seed)
                tid = content_id(self.data_key(data), victim, config, chain)
                units.append(
                    Unit(
                        "train",
                        tid,
                        {
                            "data": data.uri,
                            "victim": victim,
                            "config": config,
                            "defenses": chain,
                            "column": column,
                            "seed": seed,
                        },
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
                        "eval_users": cfg.eval_users,
                        "full": cfg.full_ranking and attack is None,
                    }
                    units.append(
                        Unit(
                            "cell",
                            content_id(tid, attack, cfg.batch_users, cfg.eval_users, payload["full"]),
                            payload,
                            deps={"model": tid},
                            label=f"{label} | {column} | seed {seed}",
                        )
                    )
        return units

    def run(self, unit: Unit, deps: dict, ctx) -> dict:
        p = unit.payload
        data = ctx.cached(p["data"], lambda: InMemoryDataset.load(PreparedDataset(p["data"])))
        if unit.stage == "train":
            t0 = time.perf_counter()

            def train() -> Victim:
                return fit_defended(Column.parse(p["column"]), p["config"], p["defenses"], data).model

            model, restored = ctx.checkpoint(
                "model", train, lambda m, d: m.save(d), lambda d: Victim.load(d).attach(data)
            )
            stages = [
                r for r in model.fit_history or [] if "stage" in r
            ]  # RAWP-FT's layer scores, fine-tuning, interpolation
            epochs = [r for r in model.fit_history or [] if "stage" not in r]
            out = {
                "model_uri": f"{ctx.out}/checkpoints/{ctx.unit.id}/model",
                "fit_seconds": round(time.perf_counter() - t0, 3),
                "restored": restored,
            }
            return dict(out, column=p["column"], seed=p["seed"], epochs=epochs, stages=stages)
        model = ctx.cached(deps["model"]["model_uri"], lambda: _load(deps["model"]["model_uri"], data)).eval()
        users, items = ctx.cached(
            f"{p['data']}/candidates/{p['eval_users']}", lambda: evaluation_users(data, p["eval_users"])
        )
        if p["attack"] is None:
            metrics = sampled_metrics(model.score_pairs, users, items)
            if p["eval_users"] is not None:  # the clean numbers on every test user as well
                every = ctx.cached(f"{p['data']}/candidates/None", lambda: evaluation_users(data, None))
                metrics.update({f"all_{k}": v for k, v in sampled_metrics(model.score_pairs, *every).items()})
        else:
            a = p["attack"]
            config = WeightAttackConfig(
                eps=a["eps"],
                method=a["method"],
                steps=a["steps"],
                alpha=a["alpha"],
                batch_users=p["batch_users"],
                target=a["target"],
            )
            scores = attacked_scores(model, config, torch.as_tensor(users), torch.as_tensor(items))
            metrics = sampled_metrics(lambda u, i, s=scores: s, users, items, chunk_users=len(users))
        if p["full"]:
            train = UserItemCSR.from_table(data.table("train"), data.n_users, data.n_items)
            test = UserItemCSR.from_table(data.table("test"), data.n_users, data.n_items)
            with torch.no_grad():
                full = full_ranking_metrics(model.score, train, test, (10, 20))
            # one held-out item per user: recall@10 is the full-ranking HR@10
            metrics.update(
                {
                    "full_hr@10": full["recall@10"],
                    "full_ndcg@10": full["ndcg@10"],
                    "full_recall@20": full["recall@20"],
                    "full_ndcg@20": full["ndcg@20"],
                }
            )
        config = {"attack": p["attack"], "batch_users": p["batch_users"], "eval_users": p["eval_users"]}
        return {"row": p["row"], "column": p["column"], "seed": p["seed"], "config": config, "metrics": metrics}


def evaluation_users(data, n: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The sampled protocol's users and candidates: every test user, or ``n`` of them drawn with the dataset's seed."""
    users, items = candidates(data.table("test"), data.table("test_negatives"))
    if n is None or n >= len(users):
        return users, items
    keep = np.sort(np.random.default_rng(data.metadata["prepare"].get("seed", 0)).choice(len(users), n, replace=False))
    return users[keep], items[keep]


def _load(uri: str, data) -> Victim:
    import tempfile

    from distrec.distributed import storage

    with tempfile.TemporaryDirectory() as tmp:
        return Victim.load(storage.download(uri, tmp)).attach(data)
