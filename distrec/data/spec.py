"""Where a job's dataset comes from, and preparing it once under the job's output folder."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from pathlib import Path

import pyarrow.fs as pafs
import pydantic

from distrec.config import ConfigError, check
from distrec.content_id import content_id
from distrec.data.dataset import METADATA_FILE, PreparedDataset, prepare, resolve_uri, write_prepared
from distrec.data.preprocess import PrepareConfig


@pydantic.dataclasses.dataclass(config=pydantic.ConfigDict(extra="forbid"))
class DatasetSpec:
    """``synthetic`` (generator options), ``path`` (a prepared dataset), or ``format`` + ``root`` (+ ``prepare``;
    ``options``: the reader's options, as ``--set`` gives them to ``distrec data prepare``; ``images``: a tar or
    folder of item images named by source item id, e.g. the ML-1M posters)."""

    synthetic: dict | None = None
    path: str | None = None
    format: str | None = None
    root: str | None = None
    prepare: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    images: str | None = None


def _exists(uri: str) -> bool:
    fs, path = resolve_uri(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def check_dataset_spec(spec: DatasetSpec, source: str, key: str = "dataset") -> None:
    """Every problem a spec can have that is visible without reading the data: one kind of source,
    known format and prepare keys, paths that exist."""
    kinds = [
        k for k, v in (("synthetic", spec.synthetic), ("path", spec.path), ("format", spec.format)) if v is not None
    ]
    if len(kinds) != 1:
        raise ConfigError(
            f"{source}: {key}: give exactly one of synthetic, path, or format + root (found {kinds or 'none'})"
        )
    local = lambda uri: "://" not in uri or uri.startswith("file://")  # noqa: E731  (object stores are checked when read)
    if spec.path is not None and local(spec.path) and not _exists(f"{spec.path}/{METADATA_FILE}"):
        raise ConfigError(f"{source}: {key}.path: {spec.path} is not a prepared dataset (no {METADATA_FILE})")
    if spec.prepare:
        from distrec.config import check_keys

        check_keys(PrepareConfig, spec.prepare, source, f"{key}.prepare")
    if spec.format is not None:
        from distrec.data.readers import READERS

        if spec.format not in READERS:
            raise ConfigError(
                f"{source}: {key}.format: unknown format {spec.format!r}; known: {', '.join(sorted(READERS))}"
            )
        if spec.root is None or not Path(spec.root).exists():
            raise ConfigError(f"{source}: {key}.root: {spec.root!r} does not exist")
        from distrec.data.readers import reader_options

        valid = reader_options(spec.format)
        unknown = sorted(set(spec.options) - set(valid) - {"on_bad_lines"})
        if unknown:
            raise ConfigError(
                f"{source}: {key}.options.{unknown[0]}: not an option of format {spec.format!r}; its options: "
                f"{', '.join(sorted(valid)) or 'none'}"
            )
    elif spec.options:
        raise ConfigError(f"{source}: {key}.options: reader options need format + root")
    if spec.images is not None and not Path(spec.images).exists():
        raise ConfigError(f"{source}: {key}.images: {spec.images!r} does not exist")
    if spec.synthetic is not None:
        import inspect

        from distrec.data.synthetic import make_synthetic

        valid = set(inspect.signature(make_synthetic).parameters)
        unknown = sorted(set(spec.synthetic) - valid)
        if unknown:
            raise ConfigError(
                f"{source}: {key}.synthetic.{unknown[0]}: unknown key; valid keys: {', '.join(sorted(valid))}"
            )


def spec_id(spec: DatasetSpec) -> str:
    """Content id of what a spec prepares: its keys and the size and modification time of every source
    file under ``root``, ``images`` and any reader option that names a path, so an edited source is prepared again
    rather than served stale."""
    keys = {k: v for k, v in dataclasses.asdict(spec).items() if k != "options" or v}  # ids from before options hold
    paths = [_stamp(v) for v in spec.options.values() if isinstance(v, str) and Path(v).exists()]
    return content_id("dataset-spec", keys, _stamp(spec.root), _stamp(spec.images), *paths)


def _stamp(root: str | None) -> list | None:
    if root is None or "://" in root:
        return None
    path = Path(root)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] if path.exists() else []
    return [(str(f.relative_to(path)) if f != path else f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]


def materialise_dataset(spec: DatasetSpec, out: str) -> PreparedDataset:
    """The job's clean dataset (the given ``path``), or prepared once under ``out/data/<spec id>``: a
    changed spec or source prepares a new one and never reuses the old."""
    if spec.path:
        return PreparedDataset(spec.path)
    target = f"{out}/data/{spec_id(spec)}"
    if _exists(f"{target}/{METADATA_FILE}"):
        return PreparedDataset(target)
    if spec.synthetic is not None:
        from distrec.data.synthetic import make_synthetic

        options = dict(spec.synthetic)
        seed = options.pop("seed", 0)
        raw, fmt, cfg = (
            make_synthetic(seed=seed, **options),
            "synthetic",
            check(PrepareConfig, {"seed": seed, **spec.prepare}, "dataset.prepare"),
        )
    elif spec.format and spec.root:
        from distrec.data.readers import read_source

        raw, fmt = read_source(spec.format, spec.root, **spec.options), spec.format
        cfg = check(PrepareConfig, spec.prepare, "dataset.prepare")
        if spec.images:
            from distrec.data.readers.images import read_image_collection

            raw.item_images = read_image_collection(spec.images, raw.bad_lines)
    else:
        raise ConfigError("dataset: give synthetic, path, or format + root")
    try:
        tables, meta = prepare(raw, cfg, fmt, spec.options)
    except ValueError as exc:
        raise ConfigError(f"dataset.prepare: {exc}") from None
    return write_prepared(tables, meta, target)
