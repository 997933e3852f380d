"""A prepared dataset: a directory (local or any ``pyarrow.fs`` URI) of Parquet tables + ``metadata.json``."""

from __future__ import annotations

import hashlib
import json
import uuid
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from distrec import __version__
from distrec.content_id import content_id
from distrec.data.errors import DataFormatError
from distrec.data.preprocess import (
    PrepareConfig,
    build_id_map,
    build_sequences,
    kcore_mask,
    restrict_id_map,
    sample_test_negatives,
    split_rows,
    to_interactions,
)
from distrec.data.schema import ITEM_IMAGES, LABELED_IMAGES, SCHEMA_VERSION, SPLITS
from distrec.data.source import RawDataset
from distrec.files import TMP_MARK, atomic_write, resolve_uri

METADATA_FILE = "metadata.json"


def _remap_keys(keys: pa.Array, key_table: pa.Array, renumber: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Internal ids for attribute keys, and the mask of keys that have one."""
    idx = pc.index_in(keys.cast(key_table.type) if keys.type != key_table.type else keys, value_set=key_table)
    pos = idx.fill_null(-1).to_numpy()
    internal = np.where(pos >= 0, renumber[np.maximum(pos, 0)], -1)
    return internal, internal >= 0


def _attach_by_key(
    table: pa.Table, key_col: str, out_col: str, key_table: pa.Array, renumber: np.ndarray, what: str, notes: list[str]
) -> pa.Table:
    internal, ok = _remap_keys(table.column(key_col).combine_chunks(), key_table, renumber)
    if (~ok).any():
        notes.append(f"{what}: {int((~ok).sum())} of {len(ok)} rows are for ids without interactions and are not kept")
    kept = table.filter(pa.array(ok)).drop_columns([key_col])
    kept = kept.add_column(0, out_col, pa.array(internal[ok], pa.int64()))
    return kept.sort_by(out_col)


def _ratings(column: pa.ChunkedArray, config: PrepareConfig, raw: RawDataset) -> np.ndarray:
    """The interactions' ratings (1 where the source has none); a threshold on a source without ratings
    is an error naming the files read."""
    files = ", ".join(s["file"] for s in raw.sources) or raw.name
    if column.null_count == len(column) and len(column):
        if config.implicit_threshold is not None:
            raise ValueError(
                f"implicit_threshold={config.implicit_threshold}: {raw.name} as read from {files} has no ratings to "
                "threshold; give a source with ratings (ml-1m: ratings.dat) or drop the threshold"
            )
        return np.ones(len(column), np.float32)
    if column.null_count:
        raise ValueError(
            f"{raw.name} ({files}): {column.null_count} of {len(column)} interactions have no rating; a source gives "
            "every rating or none"
        )
    return column.to_numpy().astype(np.float32)


def prepare(
    raw: RawDataset, config: PrepareConfig, fmt: str, reader_options: dict | None = None
) -> tuple[dict[str, pa.Table], dict]:
    """Apply ``config`` to ``raw``: the tables of the prepared dataset and its metadata."""
    meta = _metadata(raw, config, fmt, reader_options)
    notes = meta["notes"]
    tables = {f"images_{split}": t.cast(LABELED_IMAGES) for split, t in raw.labeled_images.items()}
    user_keys = item_keys = None
    if raw.interactions is not None:
        (user_keys, u_renumber), (item_keys, i_renumber) = _interaction_tables(raw, config, fmt, tables, meta)
        if raw.user_attributes is not None:
            tables["user_attributes"] = _attach_by_key(
                raw.user_attributes, "user", "user_id", user_keys, u_renumber, "user attributes", notes
            )
    if raw.item_images is not None and item_keys is None:
        item_map, _ = build_id_map(raw.item_images.column("item").combine_chunks(), None)
        tables["item_map"] = item_map
        item_keys = item_map.column("original").combine_chunks()
        i_renumber = np.arange(item_map.num_rows)
    if raw.item_attributes is not None and item_keys is not None:
        tables["item_attributes"] = _attach_by_key(
            raw.item_attributes, "item", "item_id", item_keys, i_renumber, "item attributes", notes
        )
    if raw.item_images is not None:
        tables["item_images"] = _attach_by_key(
            raw.item_images, "item", "item_id", item_keys, i_renumber, "item images", notes
        ).cast(ITEM_IMAGES)
    if "user_map" in tables:
        meta["n_users"] = tables["user_map"].num_rows
    if "item_map" in tables:
        meta["n_items"] = tables["item_map"].num_rows
    return tables, meta


def _metadata(raw: RawDataset, config: PrepareConfig, fmt: str, reader_options: dict | None) -> dict:
    """What a prepared dataset records of where it came from and how it was prepared."""
    return {
        "schema_version": SCHEMA_VERSION,
        "distrec_version": __version__,
        "name": raw.name,
        "format": fmt,
        "reader_options": reader_options or {},
        "prepare": config.to_dict(),
        "sources": raw.sources,
        "bad_lines": raw.bad_lines.report(),
        "notes": list(raw.notes),
        "category_names": raw.category_names,
    }


def _interaction_tables(raw: RawDataset, config: PrepareConfig, fmt: str, tables: dict, meta: dict):
    """Filter (threshold, k-core), renumber and split the interactions into ``tables`` (splits, id maps,
    test negatives, sequences); the (source keys, renumbering) of users and of items, for attributes."""
    inter = raw.interactions
    ratings = _ratings(inter.column("rating"), config, raw)
    user_map, uid = build_id_map(inter.column("user").combine_chunks(), raw.users)
    item_map, iid = build_id_map(inter.column("item").combine_chunks(), raw.items)
    user_keys = (raw.users.column("key") if raw.users is not None else user_map.column("original")).combine_chunks()
    item_keys = (raw.items.column("key") if raw.items is not None else item_map.column("original")).combine_chunks()
    u_renumber, i_renumber = np.arange(user_map.num_rows), np.arange(item_map.num_rows)
    keep, ratings = _kept_rows(uid, iid, ratings, config, fmt, meta)
    if not keep.all():
        user_map, u_renumber = restrict_id_map(user_map, uid[keep])
        item_map, i_renumber = restrict_id_map(item_map, iid[keep])
        uid, iid = u_renumber[uid], i_renumber[iid]
    rows = np.flatnonzero(keep)
    given = None
    if "split" in inter.column_names:
        given = pc.index_in(inter.column("split"), value_set=pa.array(SPLITS)).to_numpy()[rows]
    ts_col = inter.column("timestamp")
    ts = ts_col.to_numpy() if ts_col.null_count == 0 else None
    labels, method = split_rows(uid[rows], None if ts is None else ts[rows], given, raw.ordered, config)
    meta["split_method"] = method
    if method == "loo_random":
        meta["notes"].append(
            f"leave-one-out without timestamps: each user's held-out item drawn at random (seed {config.seed})"
        )
    for code, split in enumerate(SPLITS):
        sel = rows[labels == code]
        if len(sel) or split != "valid":
            tables[split] = to_interactions(uid, iid, ratings, ts_col, sel)
    if raw.test_candidates is not None:
        tables["test_negatives"] = _given_negatives(raw.test_candidates, config, user_map, item_map)
    elif config.test_negatives:
        users, negatives = sample_test_negatives(
            uid[rows], iid[rows], uid[rows[labels == 2]], item_map.num_rows, config.test_negatives, config.seed + 1
        )
        offsets = pa.array(np.arange(0, negatives.size + 1, negatives.shape[1], dtype=np.int32))
        tables["test_negatives"] = pa.table(
            {"user_id": users, "item_ids": pa.ListArray.from_arrays(offsets, pa.array(negatives.ravel()))}
        )
    tables["user_map"] = user_map
    tables["item_map"] = item_map
    if raw.ordered or ts is not None:
        all_rows = pa.concat_tables([tables[s] for s in SPLITS if s in tables])
        tables["sequences"] = build_sequences(all_rows, use_row_order=ts is None)
    return (user_keys, u_renumber), (item_keys, i_renumber)


def _given_negatives(candidates: pa.Table, config: PrepareConfig, user_map: pa.Table, item_map: pa.Table) -> pa.Table:
    """The source's test negatives in internal ids; they hold only for the source's own split and ids."""
    if config.test_negatives or config.split not in ("auto", "given") or config.kcore > 1:
        raise ValueError(
            "the source gives its test negatives: prepare it with split given (or auto), no kcore and no "
            f"test_negatives (got split={config.split!r}, kcore={config.kcore}, test_negatives={config.test_negatives})"
        )
    _, users = build_id_map(candidates.column("user").combine_chunks(), _universe(user_map))
    flat = candidates.column("items").combine_chunks()
    _, items = build_id_map(flat.values, _universe(item_map))
    return pa.table({"user_id": users, "item_ids": pa.ListArray.from_arrays(flat.offsets, pa.array(items))})


def _universe(id_map: pa.Table) -> pa.Table:
    original = id_map.column("original").combine_chunks()
    return pa.table({"key": original, "original": original})


def _kept_rows(
    uid: np.ndarray, iid: np.ndarray, ratings: np.ndarray, config: PrepareConfig, fmt: str, meta: dict
) -> tuple[np.ndarray, np.ndarray]:
    """The mask of interactions kept by ``implicit_threshold`` and ``kcore`` (counts dropped go to ``meta``),
    and the ratings (all ones once thresholded); an error when nothing is left."""
    keep = np.ones(len(uid), bool)
    if config.implicit_threshold is not None:
        keep &= ratings >= config.implicit_threshold
        meta["dropped_below_threshold"] = int((~keep).sum())
        ratings = np.ones_like(ratings)
    if config.kcore > 1:
        before = int(keep.sum())
        keep &= kcore_mask(uid, iid, config.kcore)
        meta["dropped_by_kcore"] = before - int(keep.sum())
    if not keep.any():
        raise ValueError(
            f"implicit_threshold={config.implicit_threshold} and kcore={config.kcore} leave none of the {len(keep)} "
            f"interactions of {fmt}"
        )
    return keep, ratings


def write_prepared(tables: dict[str, pa.Table], meta: dict, out: str | Path) -> PreparedDataset:
    """Write the tables as Parquet, then switch ``metadata.json`` to them in one atomic rename: a reader
    (or a crash at any point) sees the complete old dataset or the complete new one. Replacing a dataset
    writes its tables beside the old ones under new names and deletes the old files only after the switch."""
    fs, root = resolve_uri(out)
    old = _existing_tables(fs, root, out)
    fs.create_dir(root, recursive=True)
    token = uuid.uuid4().hex[:8]
    meta = dict(meta, tables={})
    for name, table in tables.items():
        file = f"{name}.parquet" if f"{name}.parquet" not in old else f"{name}-{token}.parquet"
        pq.write_table(table, f"{root}/{file}", filesystem=fs, compression="zstd")
        meta["tables"][name] = {"file": file, "rows": table.num_rows}
    meta["content_id"] = data_content_id(tables, meta)
    atomic_write(fs, f"{root}/{METADATA_FILE}", lambda fh: fh.write(json.dumps(meta, indent=2, default=str).encode()))
    for file in old - {t["file"] for t in meta["tables"].values()}:
        fs.delete_file(f"{root}/{file}")
    return PreparedDataset(out)


def table_digest(table: pa.Table) -> str:
    """SHA-256 of a table's schema and values (its Arrow IPC record batches)."""
    h = hashlib.sha256(table.schema.serialize().to_pybytes())
    for batch in table.combine_chunks().to_batches(max_chunksize=1 << 20):
        h.update(batch.serialize().to_pybytes())
    return h.hexdigest()


def data_content_id(tables: dict[str, pa.Table], meta: dict) -> str:
    """What identifies a prepared dataset's content: every table's values, the schema version and how it
    was prepared. Every unit id of a study derives from it, so changing any of these (a synthetic seed,
    a prepare option, a source file) changes every result's id."""
    digests = {name: table_digest(t) for name, t in sorted(tables.items())}
    return content_id("dataset", meta.get("schema_version"), meta.get("prepare"), meta.get("category_names"), digests)


def _existing_tables(fs: pafs.FileSystem, root: str, out) -> set[str]:
    """The table files of the dataset already at ``root`` (none for a new or empty folder, or one that
    holds only the Parquet files of a write that was interrupted); any other folder is refused."""
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        return set()
    names = {Path(e.path).name for e in fs.get_file_info(pafs.FileSelector(root))}
    if METADATA_FILE in names:
        with fs.open_input_stream(f"{root}/{METADATA_FILE}") as fh:
            try:
                return {t["file"] for t in json.loads(fh.read())["tables"].values()} & names
            except (ValueError, KeyError, TypeError):
                return set()  # an unreadable metadata.json is replaced; its tables are overwritten by name
    if any(not n.endswith(".parquet") and TMP_MARK not in n for n in names):
        raise FileExistsError(f"--out {out} exists and is not a distrec dataset; choose an empty or new directory")
    return set()


class PreparedDataset:
    """Read access to a prepared dataset directory, local or remote."""

    def __init__(self, uri: str | Path):
        self.uri = str(uri)
        self.fs, self.root = resolve_uri(uri)
        path = f"{self.root}/{METADATA_FILE}"
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            raise FileNotFoundError(
                f"{self.uri} is not a prepared distrec dataset: no {METADATA_FILE} (run 'distrec data prepare')"
            )
        with self.fs.open_input_stream(path) as fh:
            try:
                self.metadata = json.loads(fh.read())
            except ValueError as exc:
                raise DataFormatError(path, f"unreadable dataset metadata ({exc}); prepare the dataset again") from None
        if self.metadata.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(
                f"{path}: schema_version {self.metadata.get('schema_version')} is not {SCHEMA_VERSION}; prepare the "
                "dataset again"
            )

    @cached_property
    def content_id(self) -> str:
        """:func:`data_content_id`, recorded at write time (computed from the tables for older datasets)."""
        return self.metadata.get("content_id") or data_content_id(
            {n: self.table(n) for n in self.metadata["tables"]}, self.metadata
        )

    @property
    def n_users(self) -> int:
        return self.metadata.get("n_users", 0)

    @property
    def n_items(self) -> int:
        return self.metadata.get("n_items", 0)

    def has(self, name: str) -> bool:
        return name in self.metadata["tables"]

    def path(self, name: str) -> str:
        """The table's path on :attr:`fs` (for Ray Data, pass ``filesystem=self.fs``)."""
        if not self.has(name):
            raise KeyError(f"{self.uri} has no table {name!r}; it has {sorted(self.metadata['tables'])}")
        return f"{self.root}/{self.metadata['tables'][name]['file']}"

    def table(self, name: str, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.path(name), columns=columns, filesystem=self.fs)

    @cached_property
    def splits(self) -> list[str]:
        return [s for s in SPLITS if self.has(s)]

    def item_categories(self) -> list[list[int]] | None:
        """Each internal item's category ids (e.g. ML genres; names in ``metadata['category_names']``), or None."""
        if not self.has("item_attributes"):
            return None
        table = self.table("item_attributes", ["item_id", "categories"])
        cats: list[list[int]] = [[] for _ in range(self.n_items)]
        for item, c in zip(table.column("item_id").to_pylist(), table.column("categories").to_pylist()):
            cats[item] = c or []
        return cats

    def interactions(self, splits: list[str] | None = None) -> pa.Table:
        """The named splits (default: all) concatenated."""
        return pa.concat_tables([self.table(s) for s in (splits or self.splits)])

    def info(self) -> dict:
        """Counts computed from the tables themselves (not copied from the metadata)."""
        m = self.metadata
        out: dict = {"name": m["name"], "format": m["format"], "path": self.uri, "schema_version": m["schema_version"]}
        if self.splits:
            inter = self.interactions()
            real = inter.filter(pc.invert(inter.column("is_fake")))
            users = pc.count_distinct(real.column("user_id")).as_py()
            items = pc.count_distinct(real.column("item_id")).as_py()
            out.update(
                users=users,
                items=items,
                interactions=real.num_rows,
                splits={s: self.metadata["tables"][s]["rows"] for s in self.splits},
                density=real.num_rows / (users * items) if users and items else 0.0,
                fake_users=pc.count_distinct(inter.filter(inter.column("is_fake")).column("user_id")).as_py(),
                id_map={"users": self.n_users, "items": self.n_items},
                split_method=m.get("split_method"),
            )
        images = {
            name.removeprefix("images_"): t["rows"] for name, t in m["tables"].items() if name.startswith("images_")
        }
        if self.has("item_images"):
            images["items"] = m["tables"]["item_images"]["rows"]
        out["images"] = images
        out["item_attributes"] = (
            {"items": m["tables"]["item_attributes"]["rows"], "categories": len(m.get("category_names") or [])}
            if self.has("item_attributes")
            else None
        )
        if self.has("user_attributes"):
            cols = [c for c in self.table("user_attributes").column_names if c != "user_id"]
            out["user_attributes"] = {"users": m["tables"]["user_attributes"]["rows"], "columns": cols}
        else:
            out["user_attributes"] = None
        out["sequences"] = m["tables"]["sequences"]["rows"] if self.has("sequences") else 0
        out["bad_lines"] = m["bad_lines"]
        out["notes"] = m["notes"]
        return out


class InMemoryDataset(PreparedDataset):
    """A prepared dataset held as Arrow tables, e.g. passed to Ray tasks and actors through the object
    store, so that a worker on another node never reads the driver's local paths."""

    def __init__(self, tables: dict[str, pa.Table], metadata: dict, uri: str = "memory://"):
        self.uri, self.fs, self.root = uri, None, None
        self.tables = tables
        self.metadata = dict(metadata, tables={name: {"file": None, "rows": t.num_rows} for name, t in tables.items()})

    @classmethod
    def load(cls, dataset: PreparedDataset) -> InMemoryDataset:
        return cls({name: dataset.table(name) for name in dataset.metadata["tables"]}, dataset.metadata, dataset.uri)

    def path(self, name: str) -> str:
        raise ValueError(f"{self.uri} is held in memory; read it with table({name!r})")

    def table(self, name: str, columns: list[str] | None = None) -> pa.Table:
        if name not in self.tables:
            raise KeyError(f"{self.uri} has no table {name!r}; it has {sorted(self.tables)}")
        return self.tables[name].select(columns) if columns else self.tables[name]
