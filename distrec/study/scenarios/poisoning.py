"""Injective poisoning (docs/methods.md section 2): craft fake users with every attack on every surrogate,
retrain every victim (optionally trained with a defense) from scratch on the clean and on each
poisoned dataset for every seed, and measure the targets' exposure to the real users.

Stages: ``craft`` (attack x surrogate; writes the poisoned dataset) -> ``cell`` ((no attack | craft) x
column x seed). Rows: ``no attack`` and ``attack@surrogate``; columns: a victim behind a chain of data
and training defenses (``lightgcn+pca+apr``, :mod:`distrec.defenses.chain`); a data defense's threshold is
set on the study's clean data, and its detection is scored with ``is_fake`` after it ran."""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from dataclasses import field
from pathlib import Path
from typing import Literal

import numpy as np
import psutil
import pydantic
import torch
from safetensors.torch import load_file, save_file

from distrec.attacks import attack_class
from distrec.attacks.budget import ThreatModel, resolve_budget, select_targets, threat_model
from distrec.attacks.camouflage import CamouflageConfig
from distrec.attacks.gradient import GradientAttack
from distrec.attacks.protocols import check_protocol_data, get_protocol, with_preset
from distrec.attacks.sharpap import SharpAPConfig
from distrec.attacks.surrogate_registry import SURROGATES
from distrec.config import ConfigError, check_keys
from distrec.content_id import content_id
from distrec.data.dataset import InMemoryDataset, PreparedDataset
from distrec.data.matrix import UserItemCSR
from distrec.data.spec import DatasetSpec, check_dataset_spec, materialise_dataset
from distrec.defenses import defense_class
from distrec.defenses.chain import Column, Defended, fit_defended
from distrec.defenses.pore import POREConfig, VoteEnsemble, bagged_samples, certify, fake_grid
from distrec.defenses.registry import defenses_of_kind
from distrec.defenses.screening import Screening
from distrec.distributed import storage
from distrec.evaluation.attack_effect import measure
from distrec.files import write_local
from distrec.metrics.detection import detection_metrics
from distrec.metrics.peers import PEER_METRICS, PEER_NAMES
from distrec.metrics.targets import target_metric_names
from distrec.models.base import Victim
from distrec.models.registry import registered_victim, victim_class
from distrec.study.columns import check_columns, check_victims_and_defenses, default_columns
from distrec.study.engine import StageResources, Unit
from distrec.study.outputs import aggregate
from distrec.study.scenario import Scenario, register_scenario
from distrec.tasks.craft import check_penalty, run_attack, split_config

FORBID = pydantic.ConfigDict(extra="forbid")
METRICS = (*target_metric_names((10, 20, 50, 100)), "recall@20", "ndcg@20")
NO_ATTACK = "no attack"


@pydantic.dataclasses.dataclass(config=FORBID)
class AttackSpec:
    """``sharpap``: SharpAP keys (wraps a gradient attack); ``population``: a population config
    (members, combine, ...) for SharpAP's worst-case search over surrogate actors; ``camouflage``:
    :class:`~distrec.attacks.camouflage.CamouflageConfig` keys, the profiles reshaped to evade profile
    detectors (the adaptive row); ``penalty``: :class:`~distrec.defenses.adaptive.PenaltyConfig` keys, a
    differentiable detector's suspicion of the fakes as a penalty of the gradient attack (the adaptive row of
    such a detector); ``label``: the row's name instead of the attack's (two rows of one attack
    with other settings), ``@surrogate`` added."""

    name: str
    config: dict = field(default_factory=dict)
    sharpap: dict | None = None
    population: dict | None = None
    camouflage: dict | None = None
    penalty: dict | None = None
    label: str | None = None

    @property
    def wrapped(self) -> bool:
        return self.sharpap is not None or self.population is not None

    def row_label(self, surrogate: str | None) -> str:
        name = self.label or self.name + (
            "+population-sharpap" if self.population is not None else "+sharpap" if self.sharpap is not None else ""
        )
        if self.camouflage is not None and not self.label:
            name += f"+evade-{self.camouflage['detector']}" if self.camouflage.get("detector") else "+camouflage"
        if self.penalty is not None and not self.label:
            name += f"+penalty-{self.penalty.get('detector')}"
        return f"{name}@{surrogate}" if surrogate else name


@pydantic.dataclasses.dataclass(config=FORBID)
class PoisoningConfig:
    """``victims``: name -> training config; ``defenses``: name -> config; ``columns``: ``victim`` or
    ``victim+defense+...`` (default: every victim, then every victim with every defense that supports it);
    ``threat``: threat-model keys, ``preset`` among them (:mod:`distrec.attacks.protocols`), which also
    gives the default ``metric`` and the K of the target metrics."""

    dataset: DatasetSpec
    attacks: list[AttackSpec]
    victims: dict[str, dict]
    defenses: dict[str, dict] = field(default_factory=dict)
    columns: list[str] | None = None
    surrogates: dict[str, dict] = field(default_factory=lambda: {"wrmf": {}})
    threat: dict = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    metric: str | None = None
    peer_metrics: list[Literal[PEER_METRICS]] = field(default_factory=list)
    resources: dict[str, StageResources] = field(default_factory=dict)


def check_fake_memory(n_fake: int, n_items: int, where: str, copies: int = 4) -> None:
    """A gradient attack holds the fake users as dense float32 rows (profiles, optimiser state, gradient,
    momentum): refuse a budget whose ``copies`` of them cannot fit in this machine's memory."""
    need = copies * 4 * n_fake * n_items
    have = psutil.virtual_memory().total
    if need > 0.8 * have:
        raise ConfigError(
            f"{where}: n_fake: {n_fake:,} fake users x {n_items:,} items need about {need / 2**30:.1f} GiB as dense "
            "rows, "
            f"more than this machine's {have / 2**30:.1f} GiB allows; lower fake_ratio / n_fake"
        )


@register_scenario("poisoning")
class Poisoning(Scenario):
    description = "Injective poisoning: fake users crafted on surrogates, every victim retrained clean and poisoned"
    paper = "Tang et al., RecSys 2020; Xie et al., arXiv 2604.22170"
    Config = PoisoningConfig
    stages = ("craft", "base", "cell")

    @property
    def preset(self):
        return get_protocol(self.config.threat.get("preset"), f"{self.source}: threat")

    @property
    def metric(self) -> str:
        return self.config.metric or self.preset.metric

    @property
    def extra_metrics(self) -> tuple[str, ...]:
        k = self.metric.split("@")[1] if "@" in self.metric else "50"
        peers = tuple(PEER_NAMES[p].format(k=k) for p in self.config.peer_metrics)
        return tuple(m for m in (f"t_hr@{k}", f"hitone@{k}", "mean_rank", "recall@20", *peers) if m != self.metric)

    def metric_names(self) -> tuple[str, ...]:
        screened = any(Column.parse(c).of_kind("data") for c in self.columns())
        return (
            *target_metric_names(self.ks),
            "recall@20",
            "ndcg@20",
            *(f"detect_{k}" for k in DETECTION_METRICS if screened),
        )

    # ------------------------------------------------------------------ checked before anything runs
    def check(self) -> None:
        cfg, src = self.config, self.source
        check_dataset_spec(cfg.dataset, src)
        if not cfg.attacks:
            raise ConfigError(f"{src}: attacks: a study needs at least one attack")
        if not cfg.seeds:
            raise ConfigError(f"{src}: seeds: give at least one seed")
        if cfg.metric is not None and cfg.metric not in METRICS:
            raise ConfigError(f"{src}: metric: unknown metric {cfg.metric!r}; choose from {', '.join(METRICS)}")
        get_protocol(cfg.threat.get("preset"), f"{src}: threat")  # an unknown preset is an error naming threat.preset
        check_keys(ThreatModel, cfg.threat, src, "threat")
        if self.metric.split("@")[-1] not in {"rank", *map(str, self.ks)}:
            raise ConfigError(
                f"{src}: metric: {self.metric!r} is not measured under preset {self.preset.name!r} (K: {list(self.ks)})"
            )
        for name, scfg in cfg.surrogates.items():
            if name not in SURROGATES:
                raise ConfigError(
                    f"{src}: surrogates.{name}: unknown surrogate; differentiable surrogates: "
                    f"{', '.join(sorted(SURROGATES))}"
                )
            check_keys(SURROGATES[name].Config, scfg, src, f"surrogates.{name}")
        seen: dict[str, int] = {}
        for i, spec in enumerate(cfg.attacks):
            self._check_attack(spec, f"attacks.{i}")
            for sur in self.surrogates_of(spec):
                row = spec.row_label(sur)
                if row in seen:
                    raise ConfigError(
                        f"{src}: attacks.{i}: its row {row!r} is also attacks.{seen[row]}'s; give one of them a `label`"
                    )
                seen[row] = i
        check_victims_and_defenses(cfg.victims, cfg.defenses, src)
        check_columns(self.columns(), cfg.victims, cfg.defenses, src)

    def _check_attack(self, spec: AttackSpec, key: str) -> None:
        src = self.source
        try:
            cls = attack_class(spec.name)
        except ValueError as exc:
            raise ConfigError(f"{src}: {key}.name: {exc}") from None
        if cls.kind != "injective":
            raise ConfigError(
                f"{src}: {key}.name: {spec.name!r} is a {cls.kind} attack; a poisoning study takes injective attacks"
            )
        if spec.wrapped and not cls.uses_surrogate:
            raise ConfigError(f"{src}: {key}: SharpAP wraps gradient attacks only; {spec.name!r} uses no surrogate")
        threat_keys = {f.name for f in dataclasses.fields(ThreatModel)}
        attack_keys = {f.name for f in dataclasses.fields(cls.Config)}
        for k in spec.config:
            if k not in threat_keys | attack_keys and not k.startswith("surrogate."):
                raise ConfigError(
                    f"{src}: {key}.config.{k}: unknown key; valid keys: "
                    f"{', '.join(sorted(threat_keys | attack_keys))}, surrogate.<key>"
                )
        check_keys(cls.Config, {k: v for k, v in spec.config.items() if k in attack_keys}, src, f"{key}.config")
        try:
            cls.input_id({k: v for k, v in spec.config.items() if k in attack_keys})
        except ValueError as exc:
            raise ConfigError(f"{src}: {key}.config.{exc}") from None
        check_keys(
            ThreatModel,
            {k: v for k, v in {**self.config.threat, **spec.config}.items() if k in threat_keys},
            src,
            f"{key}.config",
        )
        if spec.sharpap is not None:
            check_keys(SharpAPConfig, spec.sharpap, src, f"{key}.sharpap")
        if spec.camouflage is not None:
            check_keys(CamouflageConfig, spec.camouflage, src, f"{key}.camouflage")
            detector = spec.camouflage.get("detector")
            if detector is not None:
                if detector not in defenses_of_kind("data"):
                    raise ConfigError(
                        f"{src}: {key}.camouflage.detector: {detector!r} is not a detector; detectors: "
                        f"{', '.join(defenses_of_kind('data'))}"
                    )
                check_keys(
                    defense_class(detector).Config,
                    spec.camouflage.get("detector_config") or {},
                    src,
                    f"{key}.camouflage.detector_config",
                )
        if spec.penalty is not None:
            check_penalty(spec.penalty, spec.population, src, f"{key}.penalty")
            if not issubclass(cls, GradientAttack):
                raise ConfigError(f"{src}: {key}.penalty: {spec.name} is not a gradient attack; a penalty needs one")
        if spec.population is not None:
            from distrec.distributed.population import PopulationConfig

            check_keys(PopulationConfig, spec.population, src, f"{key}.population")
        for sur in self.surrogates_of(spec):
            split_config(self.craft_config(spec, sur), spec.name, spec.wrapped, f"{src}: {key}", sur or "wrmf")

    def surrogates_of(self, spec: AttackSpec) -> list[str | None]:
        """The surrogates an attack is crafted on: each of the study's, or none for an attack that uses none."""
        return list(self.config.surrogates) if attack_class(spec.name).uses_surrogate else [None]

    def columns(self) -> list[str]:
        return (
            list(self.config.columns)
            if self.config.columns is not None
            else default_columns(self.config.victims, self.config.defenses)
        )

    def craft_config(self, spec: AttackSpec, surrogate: str | None) -> dict:
        config = dict(self.config.threat, **spec.config, **(spec.sharpap or {}))
        if surrogate is not None:
            config.update({f"surrogate.{k}": v for k, v in self.config.surrogates[surrogate].items()})
        return config

    @property
    def ks(self) -> tuple[int, ...]:
        return tuple(sorted({10, 20, 50, *self.preset.ks}))

    def protocol(self) -> str:
        """The preset, what this study sets over it, and the threat model that results (the one used)."""
        p = self.preset
        own = {k: v for k, v in self.config.threat.items() if k != "preset" and p.threat.get(k, object()) != v}
        used = {k: v for k, v in with_preset(self.config.threat).items() if k != "preset"}
        over = f"; this study sets {', '.join(f'{k}={v}' for k, v in own.items())} over the preset" if own else ""
        return (
            f"preset {p.name} ({p.source}{'; differs: ' + p.deviations if p.deviations else ''}){over}; threat model "
            f"used: {used}; "
            "victims retrained from scratch on clean and poisoned data, target metrics over real users only, training "
            "items masked (docs/methods.md section 2)"
        )

    def baseline(self, row: str) -> str | None:
        return NO_ATTACK

    def pairs(self) -> list[tuple[str, str]]:
        """Each wrapped attack (SharpAP, population) against the plain attack of the same name and config,
        and each adaptive attack (camouflage, penalty) against the same attack without it, on the same
        surrogate, where the study has one: read seed by seed."""

        def key(spec: AttackSpec, wrapped: bool) -> str:
            return json.dumps(
                [spec.name, spec.config, spec.sharpap if wrapped else None, spec.population if wrapped else None],
                sort_keys=True,
            )

        adaptive = lambda s: s.camouflage is not None or s.penalty is not None  # noqa: E731
        plain = {key(s, False): s for s in self.config.attacks if not s.wrapped and not adaptive(s)}
        bare = {key(s, True): s for s in self.config.attacks if not adaptive(s)}
        out = []
        for spec in self.config.attacks:
            if adaptive(spec):
                ref = bare.get(key(spec, True))
            else:
                ref = plain.get(key(spec, False)) if spec.wrapped else None
            out += [(spec.row_label(sur), ref.row_label(sur)) for sur in self.surrogates_of(spec)] if ref else []
        return out

    # ------------------------------------------------------------------ planning (driver)
    def plan(self, out: str) -> list[Unit]:
        cfg = self.config
        clean = materialise_dataset(cfg.dataset, out)
        meta = clean.metadata
        check_protocol_data(self.preset, meta.get("prepare"), f"{self.source}: threat")
        data_id = self.data_key(clean)
        train = UserItemCSR.from_table(clean.table("train"), clean.n_users, clean.n_items)
        self._check_cutoffs(clean.n_items)
        targets = self._targets(train, clean)
        pore = cfg.defenses.get("pore")
        if pore is not None and POREConfig(**pore).subsample > clean.n_users:
            raise ConfigError(
                f"{self.source}: defenses.pore.subsample: {POREConfig(**pore).subsample} users per base model, more "
                f"than the data's {clean.n_users} users"
            )
        units = []
        rows = [(NO_ATTACK, None)]
        for spec in cfg.attacks:
            for sur in self.surrogates_of(spec):
                config = self.craft_config(spec, sur)
                files = attack_class(spec.name).input_id(config)
                craft_id = content_id(
                    data_id,
                    spec.name,
                    spec.wrapped,
                    sur,
                    config,
                    spec.population,
                    *([spec.camouflage] if spec.camouflage is not None else []),
                    *([{"penalty": spec.penalty}] if spec.penalty is not None else []),
                    *([files] if files is not None else []),
                )
                payload = {
                    "attack": spec.name,
                    "surrogate": sur or "wrmf",
                    "sharpap": spec.wrapped,
                    "config": config,
                    "population": spec.population,
                    "data": clean.uri,
                }
                payload["camouflage"] = spec.camouflage
                payload["penalty"] = spec.penalty
                units.append(Unit("craft", craft_id, payload, label=spec.row_label(sur)))
                rows.append((spec.row_label(sur), craft_id))
        for label, craft_id in rows:
            for column in map(Column.parse, self.columns()):
                chain = {d: cfg.defenses[d] for d in column.defenses}
                for seed in cfg.seeds:
                    config = dict(cfg.victims[column.victim], seed=seed)
                    parts = [data_id if craft_id is None else craft_id, column.victim, config, targets]
                    if self.ks != (10, 20, 50):
                        parts.append(list(self.ks))  # the default K keep the ids of studies run before presets
                    # one training defense keeps the ids of the studies run before chains
                    parts += (
                        [*chain.items()][0]
                        if len(chain) == 1 and column.of_kind("training")
                        else [chain]
                        if chain
                        else []
                    )
                    if len(column.of_kind("data")) > 1:  # each detector's threshold on the screened reference
                        parts.append("chain reference screened")
                    if self.config.peer_metrics:
                        parts.append({"peer_metrics": sorted(self.config.peer_metrics)})
                    payload = {
                        "row": label,
                        "column": str(column),
                        "victim": column.victim,
                        "seed": seed,
                        "config": config,
                        "defenses": chain,
                        "targets": targets,
                        "n_real": clean.n_users,
                        "ks": list(self.ks),
                        "data": clean.uri,
                        "peers": list(self.config.peer_metrics),
                    }
                    deps = {"craft": craft_id} if craft_id else {}
                    if "pore" in chain:
                        bases = self._base_units(
                            parts[0], column, config, chain["pore"], payload, deps, f"{label} | {column} | seed {seed}"
                        )
                        units += bases
                        deps = dict(deps, **{f"base{k}": b.id for k, b in enumerate(bases)})
                    units.append(
                        Unit("cell", content_id(*parts), payload, deps=deps, label=f"{label} | {column} | seed {seed}")
                    )
        return units

    def summary(self, results: dict[str, dict]) -> dict:
        """PORE's certified curves (no-attack row, per column and seed) beside the empirical cells."""
        curves = {f"{r['column']} seed {r['seed']}": r["certified"] for r in results.values() if r.get("certified")}
        return {"certified": dict(sorted(curves.items()))} if curves else {}

    def report(self, cells: list[dict]) -> list[str]:
        """Which defense holds: per defended column, the clean Recall@20 it costs, the share of the plain
        attacks' lift it removes (their mean lift undefended vs defended), the fake users its detectors
        remove, and the adaptive rows' lift against it."""
        _, _, stats = aggregate(cells, self.metric)
        _, _, recall = aggregate(cells, "recall@20")
        _, _, detected = aggregate(cells, "detect_recall")
        attacks = sorted({r for r, _ in stats if r != NO_ATTACK})
        adaptive = [r for r in attacks if "+camouflage" in r or "+evade-" in r or "+penalty-" in r]
        plain = [r for r in attacks if r not in adaptive]

        def lifts(col: str, rows: list[str]) -> list[float]:
            return [
                stats[r, col][0] - stats[NO_ATTACK, col][0]
                for r in rows
                if (r, col) in stats and (NO_ATTACK, col) in stats
            ]

        lines = []
        for text in self.columns():
            column = Column.parse(text)
            if not column.defenses or (NO_ATTACK, text) not in stats or (NO_ATTACK, column.victim) not in stats:
                continue
            plain_lift, defended_lift = lifts(column.victim, plain), lifts(text, plain)
            removed = (
                1 - np.mean(defended_lift) / np.mean(plain_lift)
                if plain_lift and np.mean(plain_lift) > 0
                else float("nan")
            )
            cost = (
                100 * (recall[NO_ATTACK, text][0] - recall[NO_ATTACK, column.victim][0])
                if (NO_ATTACK, text) in recall and (NO_ATTACK, column.victim) in recall
                else float("nan")
            )
            found = [detected[r, text][0] for r in plain if (r, text) in detected]
            worst = max(((r, lifts(text, [r])) for r in adaptive), key=lambda x: x[1][0] if x[1] else -1, default=None)
            lines.append(
                f"| {text} | {cost:+.2f} | {100 * np.mean(plain_lift):+.2f} | {100 * np.mean(defended_lift):+.2f} | "
                f"{'–' if np.isnan(removed) else f'{removed:.0%}'} | "
                + (f"{100 * np.mean(found):.0f}%" if found else "–")
                + (f" | {worst[0]}: {100 * worst[1][0]:+.2f} |" if worst and worst[1] else " | – |")
            )
        if not lines:
            return []
        return self._detection_table(cells, attacks) + [""] + self._defense_head(plain) + lines

    def _detection_table(self, cells: list[dict], attacks: list[str]) -> list[str]:
        """Per attack and screened column: ROC AUC, recall and precision at the threshold, share of real users
        removed."""
        screened = [c for c in self.columns() if Column.parse(c).of_kind("data")]
        got = {k: aggregate(cells, f"detect_{k}")[2] for k in ("auc", "recall", "precision", "real_removed_share")}
        if not screened or not got["auc"]:
            return []

        def fmt(row: str, col: str) -> str:
            if (row, col) not in got["auc"]:
                return "–"
            v = {k: got[k][row, col][0] if (row, col) in got[k] else float("nan") for k in got}
            return f"{v['auc']:.2f} / {v['recall']:.0%} / {v['precision']:.0%} / {v['real_removed_share']:.1%}"

        lines = [
            "",
            "Detection (ROC AUC / recall / precision at the threshold / real users removed), mean over seeds",
            "",
        ]
        lines += ["| attack | " + " | ".join(screened) + " |", "|---" * (len(screened) + 1) + "|"]
        return lines + [f"| {r} | " + " | ".join(fmt(r, c) for c in screened) + " |" for r in attacks]

    def _defense_head(self, plain: list[str]) -> list[str]:
        return [
            "",
            f"Which defense holds ({self.metric} points, mean over seeds; plain attacks: {', '.join(plain)}): the "
            "change in clean Recall@20 (points), "
            "the plain attacks' mean lift on the undefended victim and behind the defense, the share of it removed, "
            "the fake users its detectors "
            "removed, and the strongest adaptive row's lift behind it",
            "",
            "| column | clean Recall@20 change | lift undefended | lift defended | lift removed | fakes removed | "
            "strongest adaptive row: lift |",
            "|---|---|---|---|---|---|---|",
        ]

    def _base_units(
        self, data_id: str, column: Column, config: dict, pore: dict, payload: dict, deps: dict, label: str
    ) -> list[Unit]:
        """PORE's base models, ``models_per_unit`` per unit: a unit's id covers its data, victim, seed and
        model ids, so that a larger ensemble reuses the base models of a smaller one."""
        pc = POREConfig(**pore)
        units = []
        for start in range(0, pc.n_models, pc.models_per_unit):
            models = list(range(start, min(start + pc.models_per_unit, pc.n_models)))
            base_id = content_id(data_id, column.victim, config, "pore base", pc.subsample, pc.top_n, models)
            base = {
                "data": payload["data"],
                "victim": column.victim,
                "config": config,
                "models": models,
                "subsample": pc.subsample,
                "top_n": pc.top_n,
                "n_real": payload["n_real"],
            }
            units.append(
                Unit(
                    "base",
                    base_id,
                    dict(base, seed=payload["seed"]),
                    deps=deps,
                    label=f"{label} | base models {models[0]}-{models[-1]}",
                )
            )
        return units

    def _check_cutoffs(self, n_items: int) -> None:
        """Every top-K the study ranks (the target metrics' K, a gradient attack's ``select_k``) fits the items."""
        if max(self.ks) > n_items:
            raise ConfigError(
                f"{self.source}: dataset: {n_items} items, fewer than the target metrics' largest K ({max(self.ks)})"
            )
        for i, spec in enumerate(self.config.attacks):
            select_k = getattr(attack_class(spec.name).Config(), "select_k", None)
            select_k = spec.config.get("select_k", select_k)
            if select_k is not None and select_k > n_items:
                raise ConfigError(
                    f"{self.source}: attacks.{i}.config.select_k: {select_k} exceeds the dataset's {n_items} items"
                )

    def _targets(self, train: UserItemCSR, clean: PreparedDataset) -> list[int]:
        """The one target set of the study (every attack promotes the same targets)."""
        from distrec.tasks.craft import original_to_internal

        sets = set()
        for i, spec in enumerate(self.config.attacks):
            threat_keys = {f.name for f in dataclasses.fields(ThreatModel)}
            values = {k: v for k, v in {**self.config.threat, **spec.config}.items() if k in threat_keys}
            threat = threat_model(values, f"{self.source}: attacks.{i}.config")
            if threat.target_original_ids:
                threat.target_items = original_to_internal(
                    clean.table("item_map"), threat.target_original_ids, f"{self.source}: attacks.{i}"
                )
            try:
                budget = resolve_budget(threat, train)
                sets.add(tuple(int(t) for t in select_targets(threat, train)))
            except ValueError as exc:
                raise ConfigError(f"{self.source}: threat: {exc}") from None
            check_fake_memory(budget.n_fake, train.n_items, f"{self.source}: attacks.{i}")
        if len(sets) != 1:
            raise ConfigError(
                f"{self.source}: attacks: the attacks promote different targets {sorted(sets)}; give them one threat "
                "model"
            )
        return list(sets.pop())

    # ------------------------------------------------------------------ units (workers)
    def run(self, unit: Unit, deps: dict, ctx) -> dict:
        p = unit.payload
        if unit.stage == "craft":
            data = ctx.cached(p["data"], lambda: InMemoryDataset.load(PreparedDataset(p["data"])))
            result = run_attack(
                p["attack"],
                data,
                p["surrogate"],
                p["sharpap"],
                p["config"],
                ctx.folder,
                progress=False,
                population=p["population"],
                camouflage=p.get("camouflage"),
                penalty=p.get("penalty"),
            )
            return {k: result[k] for k in ("attack", "targets", "craft_seconds", "peak_rss_mb", "n_fake", "seed")} | {
                "poisoned": ctx.folder,
                "artifacts": [f"{ctx.folder}/metadata.json"],
            }
        uri = deps["craft"]["poisoned"] if "craft" in deps else p["data"]
        data = ctx.cached(uri, lambda: InMemoryDataset.load(PreparedDataset(uri)))
        clean = ctx.cached(p["data"], lambda: InMemoryDataset.load(PreparedDataset(p["data"])))
        if unit.stage == "base":
            return self._base(p, data, ctx)
        column = Column.parse(p["column"])
        if column.defenses == ("pore",):
            return self._ensemble_cell(p, deps, data, clean)

        def train() -> Defended:
            return fit_defended(column, p["config"], p.get("defenses", {}), data, reference=clean, seed=p["seed"])

        t0 = time.perf_counter()
        defended, restored = ctx.checkpoint("model", train, save_defended, lambda d: load_defended(d, data))
        fit_seconds = time.perf_counter() - t0
        metrics = measure(
            defended.model,
            data,
            np.asarray(p["targets"]),
            p["n_real"],
            tuple(p.get("ks", (10, 20, 50))),
            p.get("peers", ()),
        )
        result = {
            "row": p["row"],
            "column": p["column"],
            "seed": p["seed"],
            "config": dict(p["config"], defenses=p.get("defenses") or None),
            "metrics": metrics,
            "fit_seconds": round(fit_seconds, 3),
            "restored": restored,
        }
        if defended.screenings:
            is_fake = fake_users(data)
            per = [dict(s.summary(), **detection_metrics(s.scores, s.removed, is_fake)) for s in defended.screenings]
            chain = detection_metrics(defended.screenings[0].scores, defended.removed, is_fake)
            metrics.update({f"detect_{k}": v for k, v in chain.items() if k in DETECTION_METRICS and v is not None})
            ctx.notes += [
                f"{p['row']} | {p['column']} | seed {p['seed']}: {w}" for s in defended.screenings for w in s.warnings
            ]
            result["screening"] = per
        return result

    def _base(self, p: dict, data: PreparedDataset, ctx) -> dict:
        """Votes of PORE base models ``p["models"]``, each fit on users drawn from the (poisoned) data."""
        train = UserItemCSR.from_table(data.table("train", ["user_id", "item_id"]), data.n_users, data.n_items)
        t0 = time.perf_counter()
        samples = bagged_samples(data.n_users, p["subsample"], p["models"], p["seed"])
        name, config = registered_victim(p["victim"], p["config"])
        votes = victim_class(name).bagged_votes(train, p["n_real"], samples, p["top_n"], **config)
        with tempfile.TemporaryDirectory() as tmp:
            save_file({"votes": torch.as_tensor(votes)}, f"{tmp}/votes.safetensors")
            storage.upload(tmp, ctx.folder)
        return {
            "models": p["models"],
            "seconds": round(time.perf_counter() - t0, 3),
            "votes": f"{ctx.folder}/votes.safetensors",
            "artifacts": [f"{ctx.folder}/votes.safetensors"],
        }

    def _ensemble_cell(self, p: dict, deps: dict, data: PreparedDataset, clean: PreparedDataset) -> dict:
        """The PORE column's cell: the base models' votes summed and measured as any victim is; on the
        no-attack row also the certified curves (:func:`~distrec.defenses.pore.certify`)."""
        pc = POREConfig(**p["defenses"]["pore"])
        votes = None
        for name in sorted(k for k in deps if k.startswith("base")):
            with tempfile.TemporaryDirectory() as tmp:
                storage.download(deps[name]["votes"].rsplit("/", 1)[0], tmp)
                part = load_file(f"{tmp}/votes.safetensors")["votes"].numpy()
            votes = part if votes is None else votes + part
        ensemble = VoteEnsemble(votes, data.n_users)
        metrics = measure(
            ensemble, data, np.asarray(p["targets"]), p["n_real"], tuple(p.get("ks", (10, 20, 50))), p.get("peers", ())
        )
        result = {
            "row": p["row"],
            "column": p["column"],
            "seed": p["seed"],
            "config": dict(p["config"], defenses=p["defenses"]),
            "metrics": metrics,
        }
        if "craft" not in deps:
            train = UserItemCSR.from_table(clean.table("train", ["user_id", "item_id"]), clean.n_users, clean.n_items)
            test = UserItemCSR.from_table(clean.table("test", ["user_id", "item_id"]), clean.n_users, clean.n_items)
            result["certified"] = certify(
                votes, train, test, np.asarray(p["targets"]), pc, clean.n_users, fake_grid(clean.n_users)
            )
        return result


DETECTION_METRICS = ("auc", "precision", "recall", "f1", "real_removed_share")


def fake_users(data: PreparedDataset) -> np.ndarray:
    """Which users of ``data`` are fake (read by the scorer after the defense, never by the defense)."""
    train = data.table("train", ["user_id", "is_fake"])
    fake = np.zeros(data.n_users, bool)
    fake[train.column("user_id").to_numpy()[train.column("is_fake").to_numpy(zero_copy_only=False)]] = True
    return fake


def save_defended(defended: Defended, folder: str) -> None:
    """The victim, and what each data defense did (scores and removals, to score them on a restore)."""
    defended.model.save(folder)
    screenings = [
        dict(
            s.summary(),
            scores=np.nan_to_num(s.scores, nan=-np.inf).tolist(),
            removed=np.flatnonzero(s.removed).tolist(),
        )
        for s in defended.screenings
    ]
    write_local(f"{folder}/screenings.json", json.dumps(screenings))


def load_defended(folder: str, data: PreparedDataset) -> Defended:
    screenings = []
    path = Path(folder, "screenings.json")
    for s in json.loads(path.read_text()) if path.exists() else []:
        scores = np.asarray(s["scores"], np.float64)
        removed = np.zeros(len(scores), bool)
        removed[s["removed"]] = True
        screenings.append(
            Screening(
                s["defense"],
                np.where(np.isinf(scores), np.nan, scores),
                s["threshold"],
                removed,
                s["reference_removed_share"],
                s["warnings"],
            )
        )
    return Defended(Victim.load(folder).attach(data), screenings)
