"""Adversarial ranking (AdvRank, Zhou et al., ECCV 2020; docs/methods.md section 4) as a transfer study:
perturbations crafted on a surrogate embedder and measured on every victim embedder (other seeds,
EST-defended, another backbone), by the rank percentile of the attack's targets in the candidate pool
(0 = top, 50 = random; CA+/QA+ push it down, CA-/QA- up).

Stages: ``train`` (one per column: an embedder, optionally trained with the ``est`` defense) ->
``craft`` (surrogate x attack x eps x k: PGD images and the trials they attack) -> ``cell`` (craft x
column). Rows ``<attack> eps=<eps> k=<k> @<surrogate>``; columns ``<victim>`` or ``<victim>+est``.
The diagonal (victim = surrogate) is today's white-box table."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import field
from pathlib import Path
from typing import Literal

import pydantic
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save_file

from distrec.attacks.ranking import Trials, build_objective, parse_attack
from distrec.config import ConfigError, UnitInterval, check_keys
from distrec.content_id import content_id
from distrec.data.labeled_images import load_labeled_images
from distrec.data.spec import DatasetSpec, check_dataset_spec, materialise_dataset
from distrec.defenses import defense_class
from distrec.defenses.chain import victim_and_defense
from distrec.distributed import storage
from distrec.models.embedding import EMBEDDERS, Embedder, embed_images
from distrec.models.embedding_trainer import TripletTrainingConfig
from distrec.study.columns import check_one_defense_columns
from distrec.study.engine import StageResources, Unit
from distrec.study.scenario import Scenario, register_scenario
from distrec.tasks.rank import attack_cell, train_ranker

FORBID = pydantic.ConfigDict(extra="forbid")


@pydantic.dataclasses.dataclass(config=FORBID)
class EmbedderSpec:
    """One victim embedder: ``model`` (``c2f2`` or ``timm``), its ``model_config`` and ``training``."""

    model: str = "c2f2"
    model_config: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)


@pydantic.dataclasses.dataclass(config=FORBID)
class RankingConfig:
    """``surrogates``: the columns attacks are crafted on; ``transfer: false`` measures each craft on its
    own surrogate only (the white-box grid). ``ks``: w (CA) or m (QA)."""

    dataset: DatasetSpec
    victims: dict[str, EmbedderSpec]
    surrogates: list[str]
    defenses: dict[str, dict] = field(default_factory=dict)
    columns: list[str] | None = None
    attacks: list[str] = field(default_factory=lambda: ["CA+", "CA-", "SP-QA+", "SP-QA-"])
    eps: list[UnitInterval] = field(default_factory=lambda: [0.01, 0.03, 0.1, 0.3])  # images are in [0, 1]
    ks: list[int] = field(default_factory=lambda: [1])
    trials: int = 1000
    batch_size: int = 250
    top_fraction: float = 0.01
    train_limit: int | None = None
    transfer: bool = True
    seed: int = 0
    seeds: list[int] = field(default_factory=lambda: [0])
    metric: Literal["rank", "sp_rank"] = "rank"
    resources: dict[str, StageResources] = field(default_factory=dict)


def _load_embedder(uri: str) -> Embedder:
    with tempfile.TemporaryDirectory() as tmp:
        return Embedder.load(storage.download(uri, tmp))


@register_scenario("ranking")
class Ranking(Scenario):
    description = "Adversarial ranking attacks on metric-learning retrieval, and embedding-shifting training"
    paper = "Zhou et al., ECCV 2020"
    Config = RankingConfig
    stages = ("train", "craft", "cell")
    hosted = {"craft": "model", "cell": "model"}
    percent = False
    extra_metrics = ("rank_before", "recall@1")
    baseline_metric = "rank_before"

    def check(self) -> None:
        cfg, src = self.config, self.source
        check_dataset_spec(cfg.dataset, src)
        for name, spec in cfg.victims.items():
            if spec.model not in EMBEDDERS.names():
                raise ConfigError(
                    f"{src}: victims.{name}.model: unknown embedder {spec.model!r}; registered: "
                    f"{', '.join(EMBEDDERS.names())}"
                )
            check_keys(EMBEDDERS.get(spec.model).Config, spec.model_config, src, f"victims.{name}.model_config")
            check_keys(TripletTrainingConfig, spec.training, src, f"victims.{name}.training")
        for name, dcfg in cfg.defenses.items():
            if name != "est":
                raise ConfigError(
                    f"{src}: defenses.{name}: not a defense of embedders; the ranking scenario supports: est"
                )
            check_keys(defense_class(name).Config, dcfg, src, f"defenses.{name}")
        check_one_defense_columns(self.columns(), cfg.victims, cfg.defenses, src, self.name)
        for i, s in enumerate(cfg.surrogates):
            if s not in self.columns():
                raise ConfigError(
                    f"{src}: surrogates.{i}: {s!r} is not one of the columns ({', '.join(self.columns())})"
                )
        for i, name in enumerate(cfg.attacks):
            try:
                parse_attack(name)
            except ValueError as exc:
                raise ConfigError(f"{src}: attacks.{i}: {exc}") from None

    def columns(self) -> list[str]:
        if self.config.columns is not None:
            return list(self.config.columns)
        return list(self.config.victims) + [f"{v}+{d}" for d in self.config.defenses for v in self.config.victims]

    def protocol(self) -> str:
        c = self.config
        return (
            "AdvRank: mean rank percentile of the targets in the test pool (0 = top, 50 = random), "
            f"{c.trials} trials per cell, seed {c.seed}; lift = rank - rank before the attack"
        )

    # ------------------------------------------------------------------ planning
    def plan(self, out: str) -> list[Unit]:
        cfg = self.config
        prepared = materialise_dataset(cfg.dataset, out)
        data = prepared.uri
        units, trained = [], {}
        for column in self.columns():
            victim, defense = victim_and_defense(column)
            spec = dataclasses.asdict(cfg.victims[victim])
            est = cfg.defenses.get(defense) if defense else None
            tid = content_id(self.data_key(prepared), spec, defense or None, est, cfg.train_limit)
            trained[column] = tid
            units.append(
                Unit(
                    "train",
                    tid,
                    {
                        "data": data,
                        "spec": spec,
                        "defense": defense or "none",
                        "est": est,
                        "train_limit": cfg.train_limit,
                        "column": column,
                    },
                    label=column,
                )
            )
        for sur in cfg.surrogates:
            for attack in cfg.attacks:
                for eps in cfg.eps:
                    for k in cfg.ks:
                        cell = {
                            "attack": attack,
                            "eps": eps,
                            "k": k,
                            "trials": cfg.trials,
                            "seed": cfg.seed,
                            "batch_size": cfg.batch_size,
                            "top_fraction": cfg.top_fraction,
                        }
                        row = f"{attack} eps={eps:g} k={k} @{sur}"
                        cid = content_id(trained[sur], cell)
                        units.append(
                            Unit(
                                "craft",
                                cid,
                                {"data": data, "cell": cell, "row": row},
                                deps={"model": trained[sur]},
                                label=row,
                            )
                        )
                        for column in self.columns() if cfg.transfer else [sur]:
                            payload = {
                                "data": data,
                                "attack": attack,
                                "row": row,
                                "column": column,
                                "batch_size": cfg.batch_size,
                                "seed": cfg.seed,
                                "cell": cell,
                            }
                            units.append(
                                Unit(
                                    "cell",
                                    content_id(cid, trained[column]),
                                    payload,
                                    deps={"craft": cid, "model": trained[column]},
                                    label=f"{row} | {column}",
                                )
                            )
        return units

    # ------------------------------------------------------------------ units
    def run(self, unit: Unit, deps: dict, ctx) -> dict:
        return {"train": self._train, "craft": self._craft, "cell": self._cell}[unit.stage](unit.payload, deps, ctx)

    def _train(self, p: dict, deps: dict, ctx) -> dict:
        spec = p["spec"]

        def train():
            with tempfile.TemporaryDirectory() as tmp:
                result = train_ranker(
                    p["data"],
                    spec["model"],
                    spec["model_config"],
                    spec["training"],
                    p["defense"],
                    p["est"],
                    p["train_limit"],
                    out=tmp,
                    progress=False,
                    source=self.source,
                )
                return Embedder.load(Path(tmp) / "model"), result

        def save(model_result, folder):
            model_result[0].save(folder)
            Path(folder, "result.json").write_text(json.dumps(model_result[1], default=str))

        def load(folder):
            return Embedder.load(folder), json.loads(Path(folder, "result.json").read_text())

        (_, result), restored = ctx.checkpoint("model", train, save, load)
        kept = {
            k: result[k]
            for k in ("metrics", "fit_seconds", "seconds_per_epoch", "training", "est", "train_images", "model_config")
        }
        return dict(kept, model_uri=f"{ctx.out}/checkpoints/{ctx.unit.id}/model", restored=restored, column=p["column"])

    def _pool(self, data: str, model_uri: str, ctx):
        """The test images, the model and its embeddings of the pool (cached per worker)."""
        test = ctx.cached(f"{data}/test", lambda: load_labeled_images(data, "test"))
        model = ctx.cached(model_uri, lambda: _load_embedder(model_uri))
        pool = ctx.cached(f"{model_uri}/pool", lambda: embed_images(model, test, 1000))
        return test, model, pool

    def _craft(self, p: dict, deps: dict, ctx) -> dict:
        test, model, pool = self._pool(p["data"], deps["model"]["model_uri"], ctx)
        result = attack_cell(model, test, pool, **p["cell"], keep=True)
        trials: Trials = result.pop("trial_set")
        tensors = {"adversarial": result.pop("adversarial").contiguous(), "rows": trials.rows, "others": trials.others}
        if trials.preserve is not None:
            tensors["preserve"] = trials.preserve
        with tempfile.TemporaryDirectory() as tmp:
            save_file(tensors, f"{tmp}/craft.safetensors")
            storage.upload(tmp, ctx.folder)
        return dict(
            result,
            tensors=f"{ctx.folder}/craft.safetensors",
            artifacts=[f"{ctx.folder}/craft.safetensors"],
            row=p["row"],
        )

    @torch.no_grad()
    def _cell(self, p: dict, deps: dict, ctx) -> dict:
        test, model, pool = self._pool(p["data"], deps["model"]["model_uri"], ctx)
        t = ctx.cached(deps["craft"]["tensors"], lambda: load_tensors(storage.read_bytes(deps["craft"]["tensors"])))
        spec = parse_attack(p["attack"])
        before, after, sp_before, sp_after = [], [], [], []
        for s in range(0, len(t["rows"]), p["batch_size"]):
            part = slice(s, s + p["batch_size"])
            trials = Trials(t["rows"][part], t["others"][part], t["preserve"][part] if "preserve" in t else None)
            objective = build_objective(spec, pool, trials, model.metric)
            emb = model(t["adversarial"][part].to(pool.device))
            before.append(objective.rank(pool[trials.rows]))
            after.append(objective.rank(emb))
            if spec.sp:
                sp_before.append(objective.preserve_rank(pool[trials.rows]))
                sp_after.append(objective.preserve_rank(emb))
        metrics = {
            "rank_before": float(torch.cat(before).mean()),
            "rank": float(torch.cat(after).mean()),
            "recall@1": deps["model"]["metrics"]["recall@1"],
        }
        if spec.sp:
            metrics.update(sp_rank_before=float(torch.cat(sp_before).mean()), sp_rank=float(torch.cat(sp_after).mean()))
        whitebox = {"rank": deps["craft"]["rank"], "rank_before": deps["craft"]["rank_before"]}
        return {
            "row": p["row"],
            "column": p["column"],
            "seed": p["seed"],
            "config": p["cell"],
            "metrics": metrics,
            "whitebox": whitebox,
        }
