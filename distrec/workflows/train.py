"""Train one victim on a prepared dataset, evaluate it on the test split, and save a checkpoint."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from distrec.config import ConfigError, check_keys
from distrec.data.dataset import PreparedDataset
from distrec.data.matrix import UserItemCSR
from distrec.files import write_local
from distrec.memory import peak_rss_mb
from distrec.metrics.ranking import full_ranking_metrics
from distrec.metrics.sampled import candidates, sampled_metrics
from distrec.models import create_victim
from distrec.models.base import pick_device
from distrec.models.registry import victim_class


def train_victim(
    name: str,
    data: str | Path,
    config: dict | None = None,
    out: str | Path | None = None,
    valid_split: str | None = None,
    ks: tuple[int, ...] = (10, 20, 50),
    progress: bool = True,
    config_source: str = "config",
    eval_shards: int = 1,
    num_cpus: int | None = None,
) -> dict:
    """Fit ``name`` with ``config`` on ``data``'s train split; the result carries config, seed and metrics.
    ``config`` may name a training defense (``defense: rawp_ft``) and its keys (``defense.gamma: 0.003``).
    A dataset with stored ``test_negatives`` is also scored by the NCF protocol (HR@10, NDCG@10).
    ``eval_shards`` > 1 scores the test users in that many Ray tasks (a local Ray of ``num_cpus``, or the
    cluster at ``RAY_ADDRESS``): the same numbers, :mod:`distrec.evaluation.sharded`."""
    if eval_shards < 1:
        raise ConfigError(f"--eval-shards {eval_shards}: at least 1")
    config = dict(config or {})
    defense, defense_config = (
        config.pop("defense", None),
        {k.removeprefix("defense."): config.pop(k) for k in [k for k in config if k.startswith("defense.")]},
    )
    schema = victim_class(name).Config
    config = check_keys(schema, config, config_source)
    dataset = PreparedDataset(data)
    if valid_split and not dataset.has(valid_split):
        raise ValueError(f"{data} has no split {valid_split!r}; it has {dataset.splits}")
    model = create_victim(name, dataset.n_users, dataset.n_items, **config)
    if defense is not None:
        model = _defended(model, name, defense, defense_config, config_source)
    t0 = time.perf_counter()
    history = model.fit(dataset, valid_split=valid_split, progress=progress)
    fit_seconds = time.perf_counter() - t0
    model.eval()
    device = pick_device(getattr(model.config, "device", None))
    train = UserItemCSR.from_table(dataset.table("train"), dataset.n_users, dataset.n_items)
    test = UserItemCSR.from_table(dataset.table("test"), dataset.n_users, dataset.n_items)
    t1 = time.perf_counter()
    if eval_shards > 1:
        from distrec.distributed.runtime import init_ray
        from distrec.evaluation.sharded import sharded_full_ranking_metrics

        init_ray(num_cpus=num_cpus)
        metrics = sharded_full_ranking_metrics(model.cpu(), train, test, ks, shards=eval_shards)
    else:
        metrics = full_ranking_metrics(model.score, train, test, ks, device=device)
    if dataset.has("test_negatives"):
        metrics["sampled"] = sampled_metrics(
            model.score_pairs, *candidates(dataset.table("test"), dataset.table("test_negatives")), device=device
        )
    result = {
        "victim": name,
        "data": str(data),
        "config": dataclasses.asdict(model.config),
        "defense": {"name": defense, "config": defense_config} if defense else None,
        "seed": model.config.seed,
        "metrics": metrics,
        "fit_seconds": round(fit_seconds, 3),
        "seconds_per_epoch": round(fit_seconds / max(len(history), 1), 3),
        "eval_seconds": round(time.perf_counter() - t1, 3),
        "eval_shards": eval_shards,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "history": history,
    }
    if out is not None:
        out = Path(out)
        model.save(out / "model")
        result["checkpoint"] = str(out / "model")
        write_local(out / "result.json", json.dumps(result, indent=2))
    return result


def _defended(model, name: str, defense: str, config: dict, source: str):
    """``model`` set to train with the training defense ``defense`` (checked as a study column is)."""
    from distrec.defenses import create_defense, defense_class
    from distrec.defenses.chain import Column, check_column

    check_column(Column(name, (defense,)), type(model), {defense: config}, source, "defense")
    if defense_class(defense).kind != "training":
        raise ConfigError(
            f"{source}: defense: {defense!r} is a {defense_class(defense).kind} defense; distrec train fits a victim "
            "with a training defense"
        )
    check_keys(defense_class(defense).Config, config, source, "defense")
    return create_defense(defense, **config).apply(model)
