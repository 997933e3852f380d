"""Train one victim on a prepared dataset, evaluate it on the test split, and save a checkpoint."""

from __future__ import annotations

import dataclasses
import json
import resource
import time
from pathlib import Path

from distrec.config import validate
from distrec.data.dataset import PreparedDataset
from distrec.data.matrix import UserItemCSR
from distrec.evaluation.ranking import full_ranking_metrics
from distrec.models import create_victim
from distrec.models.base import pick_device
from distrec.models.registry import victim_class


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_victim(
    name: str,
    data: str | Path,
    config: dict | None = None,
    out: str | Path | None = None,
    valid_split: str | None = None,
    ks: tuple[int, ...] = (10, 20, 50),
    progress: bool = True,
    config_source: str = "config",
) -> dict:
    """Fit ``name`` with ``config`` on ``data``'s train split; the result carries config, seed and metrics."""
    schema = victim_class(name).Config
    config = validate(schema, config or {}, config_source, f"victim {name!r}")
    dataset = PreparedDataset(data)
    if valid_split and not dataset.has(valid_split):
        raise ValueError(f"{data} has no split {valid_split!r}; it has {dataset.splits}")
    model = create_victim(name, dataset.n_users, dataset.n_items, **config)
    t0 = time.perf_counter()
    history = model.fit(dataset, valid_split=valid_split, progress=progress)
    fit_seconds = time.perf_counter() - t0
    model.eval()
    device = pick_device(getattr(model.config, "device", None))
    train = UserItemCSR.from_table(dataset.table("train"), dataset.n_users, dataset.n_items)
    test = UserItemCSR.from_table(dataset.table("test"), dataset.n_users, dataset.n_items)
    t1 = time.perf_counter()
    metrics = full_ranking_metrics(model.score, train, test, ks, device=device)
    result = {
        "victim": name,
        "data": str(data),
        "config": dataclasses.asdict(model.config),
        "seed": model.config.seed,
        "metrics": metrics,
        "fit_seconds": round(fit_seconds, 3),
        "seconds_per_epoch": round(fit_seconds / max(len(history), 1), 3),
        "eval_seconds": round(time.perf_counter() - t1, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "history": history,
    }
    if out is not None:
        out = Path(out)
        model.save(out / "model")
        result["checkpoint"] = str(out / "model")
        (out / "result.json").write_text(json.dumps(result, indent=2))
    return result
