"""Craft an attack on a prepared dataset and write the poisoned dataset: one ``craft`` unit of a poisoning
study, and ``distrec attack``."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import torch

from distrec.attacks import SharpAP, attack_class, create_attack
from distrec.attacks.base import AttackContext
from distrec.attacks.budget import ThreatModel, attacker_view, resolve_budget, select_targets
from distrec.attacks.camouflage import CamouflageConfig
from distrec.attacks.gradient import GradientAttack
from distrec.attacks.poisoned import write_poisoned
from distrec.attacks.profiles import check_budget
from distrec.attacks.protocols import check_protocol_data, get_protocol, with_preset
from distrec.attacks.sharpap import SharpAPConfig
from distrec.attacks.surrogate_registry import create_surrogate, surrogate_class
from distrec.config import ConfigError, check, check_keys
from distrec.data.dataset import PreparedDataset
from distrec.data.matrix import UserItemCSR
from distrec.defenses.adaptive import DetectorPenalty, PenaltyConfig, evade
from distrec.memory import peak_rss_mb
from distrec.models.base import pick_device


def split_config(
    config: dict, attack: str, sharpap: bool, source: str, surrogate: str = "wrmf"
) -> tuple[dict, dict, dict, dict]:
    """Route flat config keys to the threat model, SharpAP, the surrogate (``surrogate.KEY``, keys of
    the ``surrogate`` architecture) and the attack; a key none of them has is an error naming it and ``source``."""
    threat_keys = {f.name for f in dataclasses.fields(ThreatModel)}
    sharp_keys = {f.name for f in dataclasses.fields(SharpAPConfig)} if sharpap else set()
    attack_keys = {f.name for f in dataclasses.fields(attack_class(attack).Config)}
    parts: tuple[dict, dict, dict, dict] = ({}, {}, {}, {})
    for key, value in config.items():
        if key.startswith("surrogate."):
            parts[2][key.removeprefix("surrogate.")] = value
        elif key in threat_keys:
            parts[0][key] = value
        elif key in sharp_keys:
            parts[1][key] = value
        elif key in attack_keys:
            parts[3][key] = value
        else:
            valid = sorted(threat_keys | sharp_keys | attack_keys) + ["surrogate.<key>"]
            raise ConfigError(
                f"{source}: unknown key {key!r} for attack {attack!r}{' with SharpAP' if sharpap else ''}; valid keys "
                f"are {valid}"
            )
    threat = check_keys(ThreatModel, with_preset(parts[0], source), source)
    sharp = check_keys(SharpAPConfig, parts[1], source)
    try:
        surrogate_schema = surrogate_class(surrogate).Config
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    surrogate = check_keys(surrogate_schema, parts[2], source, "surrogate")
    attack_cfg = check_keys(attack_class(attack).Config, parts[3], source)
    return threat, sharp, surrogate, attack_cfg


def original_to_internal(item_map, originals: list, source: str) -> list[int]:
    """Internal ids of items given by their source ids (``target_original_ids``)."""
    lookup = {
        str(o): i for o, i in zip(item_map.column("original").to_pylist(), item_map.column("internal").to_pylist())
    }
    missing = [o for o in originals if str(o) not in lookup]
    if missing:
        raise ConfigError(f"{source}: target_original_ids: {missing} are not item ids of the dataset")
    return [lookup[str(o)] for o in originals]


def run_attack(
    name: str,
    data: str | Path | PreparedDataset,
    surrogate: str = "wrmf",
    sharpap: bool = False,
    config: dict | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    config_source: str = "--set",
    population: dict | None = None,
    camouflage: dict | None = None,
    penalty: dict | None = None,
) -> dict:
    """Craft attack ``name`` on ``data``'s train split; write the poisoned dataset to ``out``.
    ``camouflage`` (:class:`~distrec.attacks.camouflage.CamouflageConfig` keys) reshapes the crafted
    profiles to real users' degree and popularity (the adaptive attacker of a profile detector); ``penalty``
    (:class:`~distrec.defenses.adaptive.PenaltyConfig` keys) adds a detector's differentiable suspicion of the
    fakes to a gradient attack's steps.
    ``population`` (a :class:`PopulationConfig` mapping) runs SharpAP's worst-case search over a
    population of surrogate actors on Ray instead of one surrogate.
    The result carries the attack, its config, the surrogate, the seed, the targets, the budget, the
    wall time and the peak memory."""
    threat_cfg, sharp_cfg, surrogate_cfg, attack_cfg = split_config(
        config or {}, name, sharpap, config_source, surrogate
    )
    threat = ThreatModel(**threat_cfg)
    dataset = data if isinstance(data, PreparedDataset) else PreparedDataset(data)
    train, item_map = _clean_train(dataset, data)
    if threat.target_original_ids:
        threat.target_items = original_to_internal(item_map, threat.target_original_ids, config_source)
    protocol = get_protocol(threat.preset)
    check_protocol_data(protocol, dataset.metadata.get("prepare"), f"{config_source}: threat")
    try:
        budget = resolve_budget(threat, train)
        targets = select_targets(threat, train)
    except ValueError as exc:
        raise ConfigError(f"{config_source}: threat model: {exc}") from None
    device = pick_device(surrogate_cfg.get("device"))
    view = attacker_view(train, threat)
    ctx = AttackContext(view, targets, budget, threat.seed, dataset.item_categories(), item_map, progress, device)
    surrogate_cfg = dict(surrogate_cfg, seed=surrogate_cfg.get("seed", threat.seed))
    attack, crafter, surrogate_cfg = _crafter(
        name, ctx, surrogate, surrogate_cfg, attack_cfg, sharp_cfg, sharpap, population, config_source
    )
    if penalty is not None:
        _add_penalty(attack, check_penalty(penalty, population, config_source), view, threat.seed, config_source)
    t0 = time.perf_counter()
    fake = crafter()
    if camouflage is not None:
        fake = evade(
            fake,
            view,
            targets,
            budget,
            check(CamouflageConfig, camouflage, config_source, "camouflage"),
            threat.seed,
        )
    seconds = time.perf_counter() - t0
    check_budget(fake, budget, targets if attack.holds_every_target else targets[:0])
    item_original = item_map.sort_by("internal").column("original").to_pylist()
    meta = dict(
        attack.describe(),
        surrogate={"name": surrogate, "config": surrogate_cfg} if attack.uses_surrogate else None,
        threat_model=dataclasses.asdict(threat),
        protocol=protocol.describe(),
        seed=threat.seed,
        budget=dataclasses.asdict(budget),
        targets=targets.tolist(),
        targets_original=[item_original[t] for t in targets],
        n_fake=int(fake.shape[0]),
        fake_interactions=int(fake.sum()),
        profiles_without_every_target=int((fake[:, torch.as_tensor(targets)] == 0).any(1).sum()),
        craft_seconds=round(seconds, 3),
        peak_rss_mb=round(peak_rss_mb(), 1),
        history=getattr(attack, "history", []),
        camouflage=camouflage,
        penalty=penalty,
        data=dataset.uri,
    )
    if view is not train:
        meta["attacker_view"] = {"interactions": len(view.indices), "of": len(train.indices)}
    if out is not None:
        write_poisoned(dataset, fake, out, meta)
        meta["out"] = str(out)
    return meta


def check_penalty(penalty: dict, population: dict | None, source: str, key: str = "penalty") -> PenaltyConfig:
    """The penalty's keys checked: a detector whose score is differentiable, not beside a population."""
    from distrec.defenses.registry import defense_class, defenses_of_kind

    config = check(PenaltyConfig, penalty, source, key)
    detectors = defenses_of_kind("data")
    differentiable = [d for d in detectors if defense_class(d).differentiable()]
    if config.detector not in differentiable:
        what = "is not a detector" if config.detector not in detectors else "has no differentiable score"
        raise ConfigError(
            f"{source}: {key}.detector: {config.detector!r} {what}; a penalty takes {', '.join(differentiable)} "
            "(camouflage evades the others)"
        )
    check_keys(defense_class(config.detector).Config, config.detector_config, source, f"{key}.detector_config")
    if population is not None:
        raise ConfigError(f"{source}: {key}: a detector penalty is not combined with a population")
    return config


def _add_penalty(attack, config: PenaltyConfig, view: UserItemCSR, seed: int, source: str) -> None:
    base = attack.attack if isinstance(attack, SharpAP) else attack
    if not isinstance(base, GradientAttack):
        raise ConfigError(f"{source}: penalty: {base.name} is not a gradient attack; a detector penalty needs one")
    base.penalty = DetectorPenalty(config, view, seed)
    base.penalty_weight = config.weight


def _clean_train(dataset: PreparedDataset, data) -> tuple[UserItemCSR, pa.Table]:
    """The train split as a matrix and the item map; an error when the split already holds fake users."""
    train_table = dataset.table("train")
    if bool(pc.any(train_table.column("is_fake")).as_py()):
        raise ValueError(f"{data} already holds fake users; attack a clean dataset")
    return UserItemCSR.from_table(train_table, dataset.n_users, dataset.n_items), dataset.table("item_map")


def _crafter(name, ctx, surrogate, surrogate_cfg, attack_cfg, sharp_cfg, sharpap, population, config_source):
    """The attack object, a call that crafts the fake users, and the surrogate config as used: one
    surrogate (wrapped by SharpAP with ``sharp_cfg`` when ``sharpap``) or a population of surrogate actors
    on Ray (SharpAP's worst-case search, always with ``sharp_cfg``)."""
    if population is not None:
        from distrec.distributed.population import PopulationConfig, PopulationSharpAP
        from distrec.distributed.runtime import init_ray

        init_ray()
        attack = PopulationSharpAP(
            name, attack_cfg, sharp_cfg, **check_keys(PopulationConfig, population, config_source, "population")
        )
        return attack, lambda: attack.craft(ctx, surrogate_cfg, surrogate), surrogate_cfg
    attack = create_attack(name, **attack_cfg)
    if sharpap:
        attack = SharpAP(attack, **sharp_cfg)
    model = None
    if attack.uses_surrogate:
        model = create_surrogate(surrogate, ctx.train, ctx.budget.n_fake, ctx.device, **surrogate_cfg)
        surrogate_cfg = dataclasses.asdict(model.config)
    return attack, lambda: attack.craft(ctx, model), surrogate_cfg
