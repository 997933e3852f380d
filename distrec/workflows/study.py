"""Transferability studies: craft every attack on every surrogate, retrain every victim on the clean
and on each poisoned dataset for every seed, in parallel on a Ray cluster, and aggregate the cells into
a matrix (rows: attack x surrogate, columns: victims, cells: mean +- std over seeds).

Cell ids are content hashes of everything that determines a cell's result, so a rerun skips finished
cells and resumes an interrupted study.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pydantic
import ray
from ray.util import ActorPool
from tqdm.auto import tqdm

from distrec.config import ConfigError, load_document
from distrec.data.dataset import InMemoryDataset, PreparedDataset, prepare, write_prepared
from distrec.data.preprocess import PrepareConfig
from distrec.distributed import storage
from distrec.distributed.runtime import init_ray
from distrec.distributed.victim_actor import victim_actor
from distrec.models.registry import victim_class
from distrec.workflows.attack import run_attack

FORBID = pydantic.ConfigDict(extra="forbid")


@pydantic.dataclasses.dataclass(config=FORBID)
class DatasetSpec:
    """``synthetic`` (generator options), ``path`` (a prepared dataset), or ``format`` + ``root`` (+ ``prepare``,
    and ``images``: a tar or folder of item images named by source item id, e.g. the ML-1M posters)."""

    synthetic: dict | None = None
    path: str | None = None
    format: str | None = None
    root: str | None = None
    prepare: dict = field(default_factory=dict)
    images: str | None = None


@pydantic.dataclasses.dataclass(config=FORBID)
class AttackSpec:
    """``sharpap``: SharpAP keys (wraps a gradient attack); ``population``: a population config
    (members, combine, ...) for SharpAP's worst-case search over surrogate actors."""

    name: str
    config: dict = field(default_factory=dict)
    sharpap: dict | None = None
    population: dict | None = None


@pydantic.dataclasses.dataclass(config=FORBID)
class Resources:
    """Per crafting task and per victim actor; ``actors``: how many victim actors evaluate cells."""

    craft_cpus: float = 1
    craft_gpus: float = 0
    victim_cpus: float = 1
    victim_gpus: float = 0
    actors: int = 2


@pydantic.dataclasses.dataclass(config=FORBID)
class StudyConfig:
    dataset: DatasetSpec
    attacks: list[AttackSpec]
    victims: dict[str, dict]
    surrogates: dict[str, dict] = field(default_factory=lambda: {"wrmf": {}})
    threat: dict = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    metric: str = "t_hr@20"
    resources: Resources = field(default_factory=Resources)


def load_study(path: str | Path) -> StudyConfig:
    """Read and validate a study config; errors name the file and the key path."""
    cfg = load_document(StudyConfig, path)
    if not cfg.attacks:
        raise ConfigError(f"{path}: key attacks: a study needs at least one attack")
    for name in cfg.victims:
        victim_class(name)
    return cfg


def content_id(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def attack_label(spec: AttackSpec, surrogate: str | None) -> str:
    name = spec.name + ("+population-sharpap" if spec.population is not None else "+sharpap" if spec.sharpap is not None else "")
    return f"{name}@{surrogate}" if surrogate else name


def materialise_dataset(spec: DatasetSpec, out: str) -> PreparedDataset:
    """The study's clean dataset, prepared once under ``out/data`` (or the given ``path``)."""
    if spec.path:
        return PreparedDataset(spec.path)
    target = f"{out}/data"
    if storage.exists(f"{target}/metadata.json"):
        return PreparedDataset(target)
    if spec.synthetic is not None:
        from distrec.data.synthetic import make_synthetic

        options = dict(spec.synthetic)
        seed = options.pop("seed", 0)
        raw, fmt, cfg = make_synthetic(seed=seed, **options), "synthetic", PrepareConfig(seed=seed)
    elif spec.format and spec.root:
        from distrec.data.readers import read_source

        raw, fmt, cfg = read_source(spec.format, spec.root), spec.format, PrepareConfig(**spec.prepare)
        if spec.images:
            from distrec.data.readers.images import read_image_collection

            raw.item_images = read_image_collection(spec.images, raw.bad_lines)
    else:
        raise ConfigError("study dataset: give synthetic, path, or format + root")
    tables, meta = prepare(raw, cfg, fmt)
    return write_prepared(tables, meta, target)


@ray.remote
def craft_task(name: str, data: InMemoryDataset, surrogate: str, sharpap: bool, config: dict, out: str, population: dict | None = None) -> dict:
    result = run_attack(name, data, surrogate, sharpap, config, out, progress=False, population=population)
    return {k: result[k] for k in ("attack", "targets", "craft_seconds", "peak_rss_mb", "n_fake", "seed")}


def run_study(config_path: str | Path, out: str, progress: bool = True, num_cpus: int | None = None) -> dict:
    """Run (or resume) the study; returns the output paths and how many cells ran or were skipped."""
    cfg = load_study(config_path)
    init_ray(num_cpus=num_cpus)
    t0 = time.perf_counter()
    clean = materialise_dataset(cfg.dataset, out)
    clean_mem = InMemoryDataset.load(clean)
    data_id = content_id(clean.metadata.get("sources"), clean.metadata.get("prepare"), clean.metadata.get("reader_options"), clean.metadata["tables"])
    clean_ref = ray.put(clean_mem)

    # crafting jobs: attack x surrogate (heuristics ignore the surrogate: one job each)
    from distrec.attacks import attack_class

    crafts = []
    for spec in cfg.attacks:
        surrogates = list(cfg.surrogates) if attack_class(spec.name).uses_surrogate else [None]
        for sur in surrogates:
            config = dict(cfg.threat, **spec.config, **(spec.sharpap or {}))
            if sur is not None:
                config.update({f"surrogate.{k}": v for k, v in cfg.surrogates[sur].items()})
            craft_id = content_id(data_id, spec.name, spec.sharpap is not None, sur, config, spec.population)
            crafts.append({"id": craft_id, "label": attack_label(spec, sur), "spec": spec, "surrogate": sur, "config": config, "uri": f"{out}/poisoned/{craft_id}"})
    pending = [c for c in crafts if not storage.exists(f"{c['uri']}/metadata.json")]
    refs = {
        c["id"]: craft_task.options(num_cpus=cfg.resources.craft_cpus, num_gpus=cfg.resources.craft_gpus).remote(
            c["spec"].name, clean_ref, c["surrogate"] or "wrmf", c["spec"].sharpap is not None or c["spec"].population is not None, c["config"], c["uri"], c["spec"].population
        )
        for c in pending
    }
    for _ in tqdm(range(len(refs)), desc="craft", disable=not progress or not refs, unit="attack"):
        ready, _ = ray.wait(list(refs.values()), num_returns=1)
        refs = {k: v for k, v in refs.items() if v != ready[0]}
        ray.get(ready[0])

    # evaluation cells: (clean | poisoned) x victim x seed
    cells_dir = f"{out}/cells"
    datasets = {"clean": (clean_ref, None)}
    target_sets = set()
    for c in crafts:
        poisoned = PreparedDataset(c["uri"])
        target_sets.add(tuple(poisoned.metadata["attack"]["targets"]))
        datasets[c["id"]] = (ray.put(InMemoryDataset.load(poisoned)), c)
    if len(target_sets) != 1:
        raise ValueError(f"the study's attacks promote different targets {sorted(target_sets)}; give them one threat model")
    targets = list(target_sets.pop())
    n_real = clean.n_users
    cells = []
    for data_key, (ref, craft) in datasets.items():
        for victim, vcfg in cfg.victims.items():
            for seed in cfg.seeds:
                config = dict(vcfg, seed=seed)
                cell_id = content_id(data_id if craft is None else craft["id"], victim, config, targets)
                cells.append(
                    {"id": cell_id, "data": data_key, "attack": "no attack" if craft is None else craft["label"], "victim": victim, "seed": seed, "config": config, "ref": ref}
                )
    done = {Path(p).stem for p in storage.list_files(cells_dir, ".json")}
    todo = [c for c in cells if c["id"] not in done]
    if todo:
        actors = [victim_actor(cfg.resources.victim_cpus, cfg.resources.victim_gpus, f"{out}/checkpoints") for _ in range(max(1, min(cfg.resources.actors, len(todo))))]
        pool = ActorPool(actors)
        work = pool.map_unordered(lambda a, c: a.run_cell.remote({k: v for k, v in c.items() if k != "ref"}, c["ref"], targets, n_real), todo)
        for row in tqdm(work, total=len(todo), desc="cells", disable=not progress, unit="cell"):
            storage.write_text(f"{cells_dir}/{row['id']}.json", json.dumps(row, indent=2, default=str))
        for a in actors:
            ray.kill(a)
    rows = [json.loads(storage.read_text(f"{cells_dir}/{c['id']}.json")) for c in cells]
    paths = write_outputs(rows, cfg, out, config_path)
    return dict(paths, cells=len(cells), cells_run=len(todo), cells_skipped=len(cells) - len(todo), crafts=len(crafts), crafts_run=len(pending), seconds=round(time.perf_counter() - t0, 1))


def write_outputs(rows: list[dict], cfg: StudyConfig, out: str, config_path) -> dict:
    """The per-cell Parquet table, the matrix as Markdown and CSV, and a heatmap PNG."""
    table = pa.table(
        {
            "cell_id": [r["id"] for r in rows],
            "attack": [r["attack"] for r in rows],
            "victim": [r["victim"] for r in rows],
            "seed": [r["seed"] for r in rows],
            "config": [json.dumps(r["config"], sort_keys=True) for r in rows],
            "metrics": [json.dumps(r["metrics"], sort_keys=True) for r in rows],
            **{m: [float(r["metrics"][m]) for r in rows] for m in ("t_hr@10", "t_hr@20", "t_hr@50", "t_ndcg@20", "hitone@20", "recall@20", "ndcg@20")},
            "fit_seconds": [r["fit_seconds"] for r in rows],
            "cell_seconds": [r["cell_seconds"] for r in rows],
            "host": [r["host"] for r in rows],
        }
    )
    fs, root = storage.resolve_uri(out)
    fs.create_dir(root, recursive=True)
    pq.write_table(table, f"{root}/results.parquet", filesystem=fs)
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    victims = list(cfg.victims)
    stats = {}
    for a in attacks:
        for v in victims:
            vals = [r["metrics"][cfg.metric] for r in rows if r["attack"] == a and r["victim"] == v]
            stats[a, v] = (float(np.mean(vals)), float(np.std(vals)))
    md = [f"{cfg.metric} (%), mean ± std over seeds {cfg.seeds}; config {config_path}", "", "| attack | " + " | ".join(victims) + " |", "|---" * (len(victims) + 1) + "|"]
    csv = ["attack," + ",".join(f"{v}_mean,{v}_std" for v in victims)]
    for a in attacks:
        md.append(f"| {a} | " + " | ".join(f"{100 * stats[a, v][0]:.2f} ± {100 * stats[a, v][1]:.2f}" for v in victims) + " |")
        csv.append(a + "," + ",".join(f"{stats[a, v][0]:.6f},{stats[a, v][1]:.6f}" for v in victims))
    storage.write_text(f"{out}/matrix.md", "\n".join(md) + "\n")
    storage.write_text(f"{out}/matrix.csv", "\n".join(csv) + "\n")
    _heatmap(stats, attacks, victims, cfg.metric, f"{out}/heatmap.png")
    return {"results": f"{out}/results.parquet", "matrix_md": f"{out}/matrix.md", "matrix_csv": f"{out}/matrix.csv", "heatmap_png": f"{out}/heatmap.png", "matrix": "\n".join(md)}


def _heatmap(stats: dict, attacks: list[str], victims: list[str], metric: str, uri: str) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.array([[100 * stats[a, v][0] for v in victims] for a in attacks])
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(victims), 1.0 + 0.5 * len(attacks)))
    im = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(victims)), victims)
    ax.set_yticks(range(len(attacks)), attacks)
    for i in range(len(attacks)):
        for j in range(len(victims)):
            ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", color="w" if grid[i, j] < grid.max() * 0.6 else "k", fontsize=8)
    fig.colorbar(im, ax=ax, label=f"{metric} (%)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    storage.write_bytes(uri, buf.getvalue())
