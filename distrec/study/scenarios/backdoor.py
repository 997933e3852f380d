"""Backdoors in a pre-trained sequential recommender (Wu et al., SIGIR 2023; docs/methods.md section 6): a
provider pre-trains SASRec on its users, clean or with a backdoor (BRA, PEA) that exposes target items to
a target user group; downstream users (disjoint, seeded, histories cut short) use the released model
``direct`` (a PEA model with the prompt generator it was released with, over the users' features),
``finetune`` it (all weights), ``finetune_reinit`` (the last block re-initialised, a user's attempt to
remove a backdoor) or ``prompt``-tune it (a fresh prompt generator over their profile, the backbone frozen).

Stages: ``pretrain`` (clean / each attack x seed; checkpointed; PEA starts from the clean model) ->
``cell`` (pre-trained model x downstream mode). Rows ``clean``, ``bra rate=<r>``, ``pea rate=<r>``;
columns ``<mode>/target`` (exposure of the targets for the target group's downstream users),
``<mode>/others`` (exposure for the other downstream users), ``<mode>/overall`` (next-item accuracy of
every downstream user). Full ranking, each downstream user's history masked."""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from dataclasses import field
from pathlib import Path
from typing import Literal

import numpy as np
import pydantic
import torch
from safetensors.torch import load_file, save_file

from distrec.attacks import attack_class
from distrec.attacks.backdoor import TargetSpec, choose_targets
from distrec.config import AtLeastOne, ConfigError, Share
from distrec.content_id import content_id
from distrec.data.dataset import InMemoryDataset, PreparedDataset
from distrec.data.matrix import UserItemCSR
from distrec.data.spec import DatasetSpec, check_dataset_spec, materialise_dataset
from distrec.data.user_groups import FeatureSpec, GroupSpec, group_mask, user_features
from distrec.distributed import storage
from distrec.metrics.exposure import exposure_metrics, target_ranks
from distrec.metrics.ranking import full_ranking_metrics
from distrec.models.base import Victim, set_seed
from distrec.models.sasrec import PromptGenerator, SASRec, SASRecConfig, Sequences
from distrec.study.engine import StageResources, Unit
from distrec.study.scenario import Scenario, register_scenario

FORBID = pydantic.ConfigDict(extra="forbid")
MODES = ("direct", "finetune", "finetune_reinit", "prompt")
GROUPS = ("target", "others", "overall")
CLEAN = "clean"


@pydantic.dataclasses.dataclass(config=FORBID)
class DownstreamConfig:
    """``fraction`` of the users (seeded) are downstream, their histories cut to the last ``history`` items
    before the test item; fine-tuning and prompt tuning run ``*_epochs`` at ``*_lr`` on those histories."""

    fraction: Share = 0.2
    history: AtLeastOne = 9
    finetune_epochs: int = 10
    finetune_lr: float = 1e-3
    prompt_epochs: int = 10
    prompt_lr: float = 1e-3
    seed: int = 0


@pydantic.dataclasses.dataclass(config=FORBID)
class BackdoorConfig:
    dataset: DatasetSpec
    model: dict
    group: dict
    targets: dict = field(default_factory=dict)
    features: dict = field(default_factory=dict)
    attacks: list[dict] = field(default_factory=lambda: [{"name": "bra", "rate": 0.1}, {"name": "pea", "rate": 0.1}])
    modes: list[Literal[MODES]] = field(default_factory=lambda: ["direct", "finetune", "prompt"])
    downstream: DownstreamConfig = field(default_factory=DownstreamConfig)
    ks: list[int] = field(default_factory=lambda: [10, 20])
    seeds: list[int] = field(default_factory=lambda: [0])
    metric: str = "hr@10"
    resources: dict[str, StageResources] = field(default_factory=dict)


def attack_label(spec: dict) -> str:
    """``<name>[ <variant>] rate=<r>[ tokens=<n>]``: the variant and prompt size where not the default."""
    extra = f" {spec['variant']}" if spec.get("variant", "group") != "group" else ""
    tokens = f" tokens={spec['prompt_tokens']}" if spec.get("prompt_tokens", 1) != 1 else ""
    return f"{spec['name']}{extra} rate={spec.get('rate', attack_class(spec['name']).Config.rate):g}{tokens}"


@register_scenario("backdoor")
class Backdoor(Scenario):
    description = "Backdoors in a pre-trained sequential recommender, measured by exposure after fine-tuning"
    paper = "Wu et al., SIGIR 2023"
    Config = BackdoorConfig
    stages = ("pretrain", "cell")
    extra_metrics = ("ndcg@10",)

    def check(self) -> None:
        cfg, src = self.config, self.source
        check_dataset_spec(cfg.dataset, src)
        for key, cls, value in (
            ("model", SASRecConfig, cfg.model),
            ("group", GroupSpec, cfg.group),
            ("targets", TargetSpec, cfg.targets),
            ("features", FeatureSpec, cfg.features),
        ):
            _build(cls, value, f"{src}: {key}")
        labels = set()
        for i, spec in enumerate(cfg.attacks):
            name = spec.get("name")
            try:
                cls = attack_class(name)
            except ValueError as exc:
                raise ConfigError(f"{src}: attacks.{i}.name: {exc}") from None
            if cls.kind != "backdoor":
                raise ConfigError(
                    f"{src}: attacks.{i}.name: {name!r} is an {cls.kind} attack; a backdoor study takes bra or pea"
                )
            _build(cls.Config, {k: v for k, v in spec.items() if k != "name"}, f"{src}: attacks.{i}")
            if attack_label(spec) in labels:
                raise ConfigError(f"{src}: attacks.{i}: {attack_label(spec)!r} is listed twice")
            labels.add(attack_label(spec))
        if cfg.metric not in {f"{m}@{k}" for m in ("hr", "ndcg") for k in cfg.ks}:
            raise ConfigError(f"{src}: metric: {cfg.metric!r} is not hr@K or ndcg@K for K in ks {cfg.ks}")

    def metric_names(self) -> tuple[str, ...]:
        return tuple(f"{m}@{k}" for m in ("hr", "ndcg") for k in self.config.ks)

    def protocol(self) -> str:
        d = self.config.downstream
        return (
            f"full ranking, history masked; downstream users: {d.fraction:.0%} of the users (seed {d.seed}), "
            f"histories cut to {d.history} items; "
            + f"target = {GroupSpec(**self.config.group).describe()}; exposure HR/NDCG over every (user, target) pair "
            "(docs/methods.md section 6)"
        )

    def baseline(self, row: str) -> str | None:
        return CLEAN

    def plan(self, out: str) -> list[Unit]:
        cfg = self.config
        data = materialise_dataset(cfg.dataset, out)
        if not data.has("test"):
            raise ConfigError(
                f"{self.source}: dataset: {data.uri} has no test split (prepare sequences with split: loo)"
            )
        self._check_data(data)
        common = {
            "data": data.uri,
            "data_id": self.data_key(data),
            "model": cfg.model,
            "group": cfg.group,
            "targets": cfg.targets,
            "features": cfg.features,
            "downstream": dataclasses.asdict(cfg.downstream),
        }
        units = []
        for seed in cfg.seeds:
            clean_id = content_id("pretrain", common, None, seed)
            rows = [(CLEAN, None, clean_id)]
            units.append(Unit("pretrain", clean_id, dict(common, attack=None, seed=seed), label=f"clean seed {seed}"))
            for spec in cfg.attacks:
                uid = content_id("pretrain", common, spec, seed, "backbone+prompt" if spec["name"] == "pea" else None)
                deps = {"clean": clean_id} if spec["name"] == "pea" else {}
                units.append(
                    Unit(
                        "pretrain",
                        uid,
                        dict(common, attack=spec, seed=seed),
                        deps=deps,
                        label=f"{attack_label(spec)} seed {seed}",
                    )
                )
                rows.append((attack_label(spec), spec, uid))
            for label, _, uid in rows:
                for mode in cfg.modes:
                    payload = dict(common, row=label, mode=mode, seed=seed, ks=cfg.ks)
                    units.append(
                        Unit(
                            "cell",
                            content_id(uid, mode, cfg.ks),
                            payload,
                            deps={"model": uid},
                            label=f"{label} | {mode} | seed {seed}",
                        )
                    )
        return units

    def _check_data(self, data: PreparedDataset) -> None:
        """What the config asks of the data, checked before Ray starts: the group's attribute and its
        members, the targets (in the catalogue, at least one), the prompt's user features."""
        cfg, src = self.config, self.source
        checks = [
            ("group", lambda: group_mask(data, GroupSpec(**cfg.group))),
            ("targets", lambda: choose_targets(data, TargetSpec(**cfg.targets))[0]),
        ]
        if "prompt" in cfg.modes or any(a.get("name") == "pea" for a in cfg.attacks):
            checks.append(("features", lambda: user_features(data, FeatureSpec(**cfg.features))[0]))
        for key, build in checks:
            try:
                value = build()
            except (ValueError, KeyError) as exc:
                raise ConfigError(f"{src}: {key}: {exc}") from None
            if key == "group" and not value.any():
                raise ConfigError(f"{src}: group: no user of {data.uri} is in the group {cfg.group}")
            if key == "targets" and len(value) == 0:
                raise ConfigError(f"{src}: targets: {cfg.targets} selects no target item of {data.uri}")

    def cells(self, results: dict[str, dict]) -> list[dict]:
        out = []
        for uid, r in results.items():
            if r["stage"] != "cell":
                continue
            for group in GROUPS:
                out.append(
                    {
                        "row": r["row"],
                        "column": f"{r['mode']}/{group}",
                        "seed": r["seed"],
                        "config": r["config"],
                        "metrics": r["groups"][group],
                        "cell_id": f"{uid}/{group}",
                    }
                )
        return out

    def summary(self, results: dict[str, dict]) -> dict:
        found = {
            f"{r['row']} seed {r['seed']}": {
                k: r[k] for k in ("fit_seconds", "epochs", "n_targets", "n_group", "n_downstream")
            }
            for r in results.values()
            if r["stage"] == "pretrain"
        }
        return {"pretraining": dict(sorted(found.items()))}

    def run(self, unit: Unit, deps: dict, ctx) -> dict:
        p = unit.payload
        data = ctx.cached(p["data"], lambda: InMemoryDataset.load(PreparedDataset(p["data"])))
        world = ctx.cached(
            content_id("world", p["data"], p["group"], p["targets"], p["features"], p["downstream"]),
            lambda: World(data, p),
        )
        if unit.stage == "pretrain":
            return self._pretrain(p, deps, ctx, data, world)
        return self._cell(p, deps, ctx, data, world)

    def _pretrain(self, p, deps, ctx, data, world) -> dict:
        t0 = time.perf_counter()
        spec = p["attack"]

        def train() -> SASRec:
            model = SASRec(data.n_users, data.n_items, **dict(p["model"], seed=p["seed"]))
            if spec is None:
                model.fit_history = model.fit(data, "valid", progress=False, sequences=world.provider)
            elif spec["name"] == "bra":
                model.poison = attack_class("bra")(**_attack_config(spec)).poison(
                    world.group, world.targets, world.target_categories, world.item_categories
                )
                model.fit_history = model.fit(data, "valid", progress=False, sequences=world.provider)
            else:
                model.fit_history = _pea(model, deps["clean"]["model_uri"], spec, data, world)
            model.poison = None
            return model

        model, restored = ctx.checkpoint("model", train, _save_release, lambda d: Victim.load(d))
        epochs = [r for r in model.fit_history or [] if "epoch" in r]
        return {
            "model_uri": f"{ctx.out}/checkpoints/{ctx.unit.id}/model",
            "row": attack_label(spec) if spec else CLEAN,
            "seed": p["seed"],
            "fit_seconds": round(time.perf_counter() - t0, 2),
            "restored": restored,
            "epochs": epochs,
            "n_targets": len(world.targets),
            "n_group": int(world.group[world.downstream.users].sum()),
            "n_downstream": len(world.downstream),
        }

    def _cell(self, p, deps, ctx, data, world) -> dict:
        model = _load(deps["model"]["model_uri"], world)
        d = p["downstream"]
        mode = p["mode"]
        if mode in ("finetune", "finetune_reinit"):
            if mode == "finetune_reinit":
                set_seed(p["seed"] + 17)
                for module in model.blocks[-1].modules():
                    if hasattr(module, "reset_parameters") and module is not model.blocks[-1]:
                        module.reset_parameters()
            model.config = dataclasses.replace(
                model.config, epochs=d["finetune_epochs"], lr=d["finetune_lr"], seed=p["seed"] + 1
            )
            model.fit(data, progress=False, sequences=world.downstream)
        elif mode == "prompt":
            tokens = model.prompt.tokens if model.prompt is not None else 1  # the released prompt's size
            _prompt_tune(
                model, world, d["prompt_epochs"], d["prompt_lr"], p["seed"] + 2, data, world.downstream, tokens
            )
        model.eval().set_histories(world.downstream)
        groups = world.evaluate(model, p["ks"])
        return {
            "row": p["row"],
            "mode": mode,
            "seed": p["seed"],
            "config": {"mode": mode, "downstream": d},
            "groups": groups,
        }


def _build(cls, value: dict, where: str):
    try:
        return cls(**value)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}; valid keys: {', '.join(f.name for f in dataclasses.fields(cls))}") from None
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _attack_config(spec: dict) -> dict:
    return {k: v for k, v in spec.items() if k != "name"}


def _save_release(model: SASRec, folder: str) -> None:
    """The released model: the backbone, and (PEA) its prompt generator beside it, over the same features."""
    prompt, model.prompt = model.prompt, None
    model.save(folder)
    model.prompt = prompt
    if prompt is not None:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in prompt.state_dict().items()},
            Path(folder) / "prompt.safetensors",
        )
        (Path(folder) / "prompt.json").write_text(
            json.dumps({"cardinalities": [e.num_embeddings for e in prompt.features], "tokens": prompt.tokens})
        )


def _load(uri: str, world: World | None = None) -> SASRec:
    """A released model; with ``world``, its prompt generator (if it has one) attached to the users' features."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(storage.download(uri, tmp))
        model = Victim.load(folder)
        if world is not None and (folder / "prompt.json").exists():
            released = json.loads((folder / "prompt.json").read_text())
            prompt = PromptGenerator(
                released["cardinalities"], model.config.dim, model.config.layers, released.get("tokens", 1)
            )
            prompt.load_state_dict(load_file(folder / "prompt.safetensors"))
            model.attach_prompt(prompt, world.features)
        return model


class World:
    """What every unit of a backdoor study shares: the provider / downstream users, the target group, the
    targets, the user features, and the downstream ground truth."""

    def __init__(self, data: PreparedDataset, p: dict):
        d = p["downstream"]
        everyone = Sequences.history(data, ("train", "valid"))
        rng = np.random.default_rng(d["seed"])
        order = rng.permutation(everyone.users)
        n_down = int(round(len(order) * d["fraction"]))
        down_users = np.sort(order[:n_down])
        self.provider = Sequences.history(data, ("train",)).subset(np.sort(order[n_down:]))
        self.downstream = everyone.subset(down_users, last=d["history"])
        self.group = group_mask(data, GroupSpec(**p["group"]))
        self.targets, self.target_categories = choose_targets(data, TargetSpec(**p["targets"]))
        self.item_categories = _item_categories(data)
        features, self.feature_sizes = user_features(data, FeatureSpec(**p["features"]))
        self.features = torch.as_tensor(features)
        test = data.table("test")
        keep = np.isin(test.column("user_id").to_numpy(), down_users)
        self.test = UserItemCSR.from_arrays(
            test.column("user_id").to_numpy()[keep], test.column("item_id").to_numpy()[keep], data.n_users, data.n_items
        )
        self.seen = self.downstream.csr(data.n_users, data.n_items)

    def evaluate(self, model: SASRec, ks) -> dict:
        """Exposure of the targets for the downstream target group and the others; overall accuracy."""
        users = self.downstream.users
        ranks = target_ranks(model.score, users, self.seen, self.targets)
        in_group = self.group[users]
        overall = full_ranking_metrics(model.score, self.seen, self.test, ks)
        return {
            "target": exposure_metrics(ranks[in_group], ks) | {"users": int(in_group.sum())},
            "others": exposure_metrics(ranks[~in_group], ks) | {"users": int((~in_group).sum())},
            "overall": {k: v for k, v in overall.items() if k.startswith(("hr@", "ndcg@"))}
            | {"users": overall["n_users"]},
        }


def _item_categories(data: PreparedDataset) -> list[list[int]] | None:
    if not data.has("item_attributes"):
        return None
    cats: list[list[int]] = [[] for _ in range(data.n_items)]
    t = data.table("item_attributes")
    for i, c in zip(t.column("item_id").to_pylist(), t.column("categories").to_pylist()):
        cats[i] = c or []
    return cats


def _prompt_tune(
    model: SASRec, world: World, epochs: int, lr: float, seed: int, data, sequences: Sequences, tokens: int = 1
) -> None:
    """A fresh prompt generator of ``tokens`` per layer over the user features, trained alone (the backbone frozen)."""
    set_seed(seed)
    model.attach_prompt(
        PromptGenerator(world.feature_sizes, model.config.dim, model.config.layers, tokens), world.features
    )
    backbone = [q for n, q in model.named_parameters() if not n.startswith("prompt.")]
    for q in backbone:
        q.requires_grad_(False)
    model.config = dataclasses.replace(model.config, epochs=epochs, lr=lr, seed=seed)
    try:
        model.fit(data, progress=False, sequences=sequences, parameters=model.prompt.parameters())
    finally:
        for q in backbone:
            q.requires_grad_(True)


def _pea(model: SASRec, clean_uri: str, spec: dict, data, world: World) -> list[dict]:
    """PEA's four steps (docs/methods.md section 6) on the provider's users: start from the clean model, train a
    prompt generator on it, train the backbone with the prompt frozen and the poisoned examples, release
    both (``direct`` uses the prompt as released, ``finetune`` tunes it with the backbone, ``prompt``
    re-initialises it)."""
    cfg = attack_class("pea")(**_attack_config(spec)).config
    base = model.config
    model.load_state_dict(_load(clean_uri).state_dict())
    _prompt_tune(model, world, cfg.prompt_epochs, cfg.prompt_lr, base.seed + 3, data, world.provider, cfg.prompt_tokens)
    prompt = model.prompt
    for q in prompt.parameters():
        q.requires_grad_(False)
    model.poison = attack_class("pea")(**_attack_config(spec)).poison(world.group, world.targets)
    model.config = dataclasses.replace(base, epochs=cfg.attack_epochs)
    backbone = [q for n, q in model.named_parameters() if not n.startswith("prompt.")]
    history = model.fit(data, "valid", progress=False, sequences=world.provider, parameters=backbone)
    for q in prompt.parameters():
        q.requires_grad_(True)
    model.config = base
    return history
