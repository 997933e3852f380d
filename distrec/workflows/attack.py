"""Craft an attack on a prepared dataset and write the poisoned dataset; evaluate a poisoned dataset
by retraining victims from scratch on clean and on poisoned data for several seeds."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from distrec.attacks import SharpAP, attack_class, create_attack
from distrec.attacks.base import AttackContext
from distrec.attacks.budget import ThreatModel, attacker_view, resolve_budget, select_targets
from distrec.attacks.camouflage import CamouflageConfig
from distrec.attacks.poisoned import clean_twin, write_poisoned
from distrec.attacks.profiles import check_budget
from distrec.attacks.protocols import check_protocol_data, get_protocol, with_preset
from distrec.attacks.sharpap import SharpAPConfig
from distrec.attacks.surrogate_registry import create_surrogate, surrogate_class
from distrec.config import ConfigError, validate
from distrec.content_id import content_id
from distrec.data.dataset import PreparedDataset
from distrec.data.download import default_cache_dir
from distrec.data.matrix import UserItemCSR
from distrec.defenses.adaptive import evade
from distrec.evaluation.attack_effect import measure
from distrec.files import write_local
from distrec.models import create_victim
from distrec.models.base import pick_device
from distrec.models.registry import victim_class
from distrec.workflows.train import peak_rss_mb


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
    threat = validate(ThreatModel, with_preset(parts[0], source), source, "the threat model")
    sharp = validate(SharpAPConfig, parts[1], source, "sharpap")
    try:
        surrogate_schema = surrogate_class(surrogate).Config
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    surrogate = validate(surrogate_schema, parts[2], source, f"the {surrogate} surrogate")
    attack_cfg = validate(attack_class(attack).Config, parts[3], source, f"attack {attack!r}")
    return threat, sharp, surrogate, attack_cfg


def original_to_internal(item_map, originals: list, source: str) -> list[int]:
    """Internal ids of items given by their source ids (``target_original_ids``)."""
    lookup = {
        str(o): i for o, i in zip(item_map.column("original").to_pylist(), item_map.column("internal").to_pylist())
    }
    missing = [o for o in originals if str(o) not in lookup]
    if missing:
        raise ConfigError(f"{source}: key target_original_ids: {missing} are not item ids of the dataset")
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
) -> dict:
    """Craft attack ``name`` on ``data``'s train split; write the poisoned dataset to ``out``.
    ``camouflage`` (:class:`~distrec.attacks.camouflage.CamouflageConfig` keys) reshapes the crafted
    profiles to real users' degree and popularity (the adaptive attacker of a profile detector).
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
    t0 = time.perf_counter()
    fake = crafter()
    if camouflage is not None:
        fake = evade(
            fake,
            view,
            targets,
            budget,
            CamouflageConfig(**validate(CamouflageConfig, camouflage, config_source, "camouflage")),
            threat.seed,
        )
    seconds = time.perf_counter() - t0
    check_budget(fake, budget, targets)
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
        craft_seconds=round(seconds, 3),
        peak_rss_mb=round(peak_rss_mb(), 1),
        history=getattr(attack, "history", []),
        camouflage=camouflage,
        data=dataset.uri,
    )
    if view is not train:
        meta["attacker_view"] = {"interactions": len(view.indices), "of": len(train.indices)}
    if out is not None:
        write_poisoned(dataset, fake, out, meta)
        meta["out"] = str(out)
    return meta


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
            name, attack_cfg, sharp_cfg, **validate(PopulationConfig, population, config_source, "population")
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


def train_and_measure(
    name: str,
    dataset: PreparedDataset,
    config: dict,
    targets: np.ndarray,
    n_real: int,
    ks=(10, 20, 50),
    progress: bool = False,
) -> dict:
    """Train victim ``name`` from scratch on ``dataset``; target metrics over the real users and
    full-ranking accuracy on the test split."""
    model = create_victim(name, dataset.n_users, dataset.n_items, **config)
    t0 = time.perf_counter()
    model.fit(dataset, progress=progress)
    return dict(measure(model, dataset, targets, n_real, ks), fit_seconds=round(time.perf_counter() - t0, 3))


def resolved_victim_configs(
    victims: list[str], victim_configs: dict | None, config_source: str = "--victim-config"
) -> dict:
    """Each victim's full, validated config (defaults filled in), as an evaluation records it."""
    victim_configs = victim_configs or {}
    return {
        v: validate(victim_class(v).Config, dict(victim_configs.get(v) or {}), config_source, f"victim {v!r}")
        for v in victims
    }


def clean_data_id(poisoned: PreparedDataset) -> str:
    """Content id of the clean data a poisoned dataset was made from: its metadata but the tables, the
    attack and where it was written, and a SHA-256 of the real users' train and test interactions."""
    meta = {k: v for k, v in poisoned.metadata.items() if k not in ("tables", "attack", "clean_dataset", "n_users")}
    digest = hashlib.sha256()
    for split in ("train", "test"):
        table = poisoned.table(split)
        if split == "train":
            table = table.filter(pc.invert(table.column("is_fake")))
        for column in ("user_id", "item_id"):
            digest.update(np.ascontiguousarray(table.column(column).to_numpy()).tobytes())
    return content_id(meta, digest.hexdigest())


class CleanRuns:
    """Clean victims' measurements keyed by (clean data, victim, config with seed, targets, K): computed
    once, then read from ``folder`` (``<id>.json``) by every later evaluation, of any attack."""

    def __init__(self, folder: str | Path | None):
        self.folder = Path(folder) if folder is not None else None

    def get(self, key: str, compute) -> dict:
        path = self.folder / f"{key}.json" if self.folder is not None else None
        if path is not None and path.exists():
            try:
                return dict(json.loads(path.read_text()), cached=True)
            except ValueError as exc:
                print(f"[distrec] discarded {path}: unreadable JSON ({exc}); recomputing", file=sys.stderr, flush=True)
        result = compute()
        if path is not None:
            write_local(path, json.dumps(result))
        return result


def default_clean_cache() -> Path:
    return default_cache_dir() / "clean_victims"


def evaluate_attack(
    poisoned: str | Path,
    victims: list[str],
    seeds: int | list[int] = 3,
    victim_configs: dict | None = None,
    progress: bool = True,
    config_source: str = "--victim-config",
    cache_dir: str | Path | None = None,
) -> dict:
    """Retrain each victim from scratch on the clean and on the poisoned data for each seed (same
    config and seed for both) and report, per victim, the mean and std over seeds of the target
    metrics after the attack and before it, their lift, the clean accuracy with and without the fake
    users, and each run, at the K of the attack's protocol preset. Clean runs are content-addressed
    in ``cache_dir`` (``None``: not kept) and reused by every later evaluation."""
    ds = PreparedDataset(poisoned)
    attack = ds.metadata.get("attack")
    if attack is None:
        raise ValueError(
            f"{poisoned} is not a poisoned dataset (no 'attack' in its metadata); run 'distrec attack' first"
        )
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    configs = resolved_victim_configs(victims, victim_configs, config_source)
    protocol = get_protocol((attack.get("threat_model") or {}).get("preset"))
    ks = tuple(sorted({10, 20, 50, *protocol.ks}))
    targets = np.asarray(attack["targets"])
    n_real = ds.metadata["n_real_users"]
    clean_runs, data_id = CleanRuns(cache_dir), clean_data_id(ds)
    result = {
        "poisoned": str(poisoned),
        "attack": attack["attack"],
        "surrogate": (attack.get("surrogate") or {}).get("name"),
        "protocol": protocol.describe(),
        "targets": targets.tolist(),
        "seeds": seeds,
        "victims": {},
    }
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        clean = None

        def fit_clean(v, cfg):
            nonlocal clean
            clean = clean or clean_twin(ds, Path(tmp) / "clean")
            return train_and_measure(v, clean, cfg, targets, n_real, ks, progress)

        cells = [(v, s) for v in victims for s in seeds]
        for v, s in tqdm(cells, desc="evaluate-attack (victim x seed)", disable=not progress, unit="cell"):
            cfg = dict(configs[v], seed=s)
            key = content_id(data_id, v, cfg, targets.tolist(), ks)
            run = {"seed": s, "clean": clean_runs.get(key, lambda v=v, cfg=cfg: fit_clean(v, cfg))}
            run["poisoned"] = train_and_measure(v, ds, cfg, targets, n_real, ks, progress)
            result["victims"].setdefault(v, {"config": configs[v], "runs": []})["runs"].append(run)
    for entry in result["victims"].values():
        entry.update(summarize(entry["runs"]))
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result


def target_metric_names(ks) -> list[str]:
    return [f"{m}@{k}" for m in ("t_hr", "t_ndcg", "hitone") for k in ks] + ["mean_rank"]


def summarize(runs: list[dict]) -> dict:
    """Mean and std over seeds: target metrics of the poisoned victim (and of the clean one, prefixed
    ``clean_``), their ``lift`` (difference and ratio of the means), and ``recall@20_with_fakes`` /
    ``recall@20_without_fakes`` (likewise NDCG)."""
    values: dict[str, list[float]] = {}
    names = [m for m in target_metric_names((10, 20, 50, 100)) if m in runs[0]["poisoned"]]
    for run in runs:
        for m in names:
            values.setdefault(m, []).append(run["poisoned"][m])
            values.setdefault(f"clean_{m}", []).append(run["clean"][m])
        for m in ("recall@20", "ndcg@20"):
            values.setdefault(f"{m}_with_fakes", []).append(run["poisoned"][m])
            values.setdefault(f"{m}_without_fakes", []).append(run["clean"][m])
    out = {m: float(np.mean(v)) for m, v in values.items()}
    out["std"] = {m: float(np.std(v)) for m, v in values.items()}
    out["lift"] = {m: lift(out[m], out[f"clean_{m}"]) for m in names}
    return out


def lift(after: float, before: float) -> dict:
    """Difference and ratio of a metric after the attack over its no-attack value (ratio ``None`` at 0)."""
    return {"difference": after - before, "ratio": after / before if before else None}
