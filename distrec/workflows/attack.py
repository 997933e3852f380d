"""``distrec evaluate-attack``: a poisoned dataset's effect, measured by the study engine. The poisoned dataset
becomes one row (the ``poisoned`` attack) of a poisoning study on the data it was made from; its cells (each
victim retrained from scratch, clean and poisoned, per seed) are units of the engine, stored in a folder every
evaluation shares, so a clean victim is trained once for every attack on the same data and targets."""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from distrec.attacks.poisoned import clean_original
from distrec.attacks.protocols import get_protocol
from distrec.config import ConfigError, check_keys
from distrec.data.dataset import METADATA_FILE, PreparedDataset
from distrec.data.download import default_cache_dir
from distrec.distributed import storage
from distrec.metrics.targets import target_metric_names
from distrec.models.registry import victim_class
from distrec.study.outputs import ratio
from distrec.study.runner import run_study, study_from_dict
from distrec.study.scenarios.poisoning import NO_ATTACK


def resolved_victim_configs(
    victims: list[str], victim_configs: dict | None, config_source: str = "--victim-config"
) -> dict:
    """Each victim's full, validated config (defaults filled in), as an evaluation records it."""
    victim_configs = victim_configs or {}
    for v in victims:
        try:
            victim_class(v)
        except ValueError as exc:
            raise ConfigError(f"--victims: {exc}") from None
    return {v: check_keys(victim_class(v).Config, dict(victim_configs.get(v) or {}), config_source, v) for v in victims}


def default_store() -> Path:
    """Where evaluations keep their units unless told otherwise: ``$DISTREC_CACHE/evaluate_attack``."""
    return default_cache_dir() / "evaluate_attack"


def evaluation_study(poisoned: PreparedDataset, clean_path: str, configs: dict, seeds: list[int]) -> dict:
    """The poisoning study config that measures ``poisoned``: its attack as the one row (same threat model,
    same targets), the given victims as columns, on the data it was made from."""
    attack = poisoned.metadata["attack"]
    threat = dict(attack.get("threat_model") or {}, target_items=list(attack["targets"]), target_original_ids=[])
    surrogate = (attack.get("surrogate") or {}).get("name")
    label = attack["attack"] + (f"@{surrogate}" if surrogate else "")
    return {
        "scenario": "poisoning",
        "dataset": {"path": clean_path},
        "attacks": [{"name": "poisoned", "config": {"path": poisoned.uri}, "label": label}],
        "victims": configs,
        "threat": threat,
        "seeds": seeds,
    }


def evaluate_attack(
    poisoned: str | Path,
    victims: list[str],
    seeds: int | list[int] = 3,
    victim_configs: dict | None = None,
    progress: bool = True,
    config_source: str = "--victim-config",
    store: str | Path | None = None,
    num_cpus: int | None = None,
) -> dict:
    """Retrain each victim from scratch on the clean and on the poisoned data for each seed (same config and seed
    for both) and report, per victim, the mean and std over seeds of the target metrics after the attack and
    before it, their lift, the clean accuracy with and without the fake users, and each run, at the K of the
    attack's protocol preset. ``store``: the engine's unit folder (default :func:`default_store`; ``None`` in a
    temporary folder keeps nothing); the study's matrix goes to ``store/evaluations/<poisoned content id>``."""
    ds = PreparedDataset(poisoned)
    attack = ds.metadata.get("attack")
    if attack is None:
        raise ValueError(
            f"{poisoned} is not a poisoned dataset (no 'attack' in its metadata); run 'distrec attack' first"
        )
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    configs = resolved_victim_configs(victims, victim_configs, config_source)
    with tempfile.TemporaryDirectory() as tmp:
        root = str(Path(store if store is not None else tmp).resolve())
        clean = f"{root}/clean/{ds.content_id}"
        if not storage.exists(f"{clean}/{METADATA_FILE}"):
            clean_original(ds, clean)
        raw = evaluation_study(ds, clean, configs, seeds)
        scenario = study_from_dict(raw, f"evaluate-attack {poisoned}")
        out = f"{root}/evaluations/{ds.content_id}"
        study = run_study(
            f"evaluate-attack {poisoned}", out, progress=progress, num_cpus=num_cpus, scenario=scenario, store=root
        )
        cells = _cells(study["results"])
    row = raw["attacks"][0]["label"]
    protocol = get_protocol((attack.get("threat_model") or {}).get("preset"))
    result = {
        "poisoned": str(poisoned),
        "attack": attack["attack"],
        "surrogate": (attack.get("surrogate") or {}).get("name"),
        "protocol": protocol.describe(),
        "targets": list(attack["targets"]),
        "seeds": seeds,
        "victims": {},
        "cells_run": study["cells_run"],
        "cells_reused": study["cells_skipped"],
        "study": out if store is not None else None,
    }
    for v in victims:
        runs = [{"seed": s, "clean": cells[NO_ATTACK, v, s], "poisoned": cells[row, v, s]} for s in seeds]
        result["victims"][v] = dict(config=configs[v], runs=runs, **summarize(runs))
    result["seconds"] = study["seconds"]
    return result


def _cells(results_uri: str) -> dict:
    """(row, column, seed) -> the cell's metrics, from the study's results table."""
    table = pq.read_table(io.BytesIO(storage.read_bytes(results_uri))).to_pylist()
    return {(c["row"], c["column"], c["seed"]): json.loads(c["metrics"]) for c in table}


def summarize(runs: list[dict]) -> dict:
    """Mean and std over seeds: target metrics of the poisoned victim (and of the clean one, prefixed
    ``clean_``), their ``lift`` (difference and ratio of the means, as the study matrix computes them), and
    ``recall@20_with_fakes`` / ``recall@20_without_fakes`` (likewise NDCG)."""
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
    out["lift"] = {
        m: {"difference": out[m] - out[f"clean_{m}"], "ratio": ratio(out[m], out[f"clean_{m}"])} for m in names
    }
    return out
