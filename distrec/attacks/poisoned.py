"""A poisoned dataset: a prepared dataset with the fake users appended (new ids, ``is_fake`` set)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from distrec.attacks.profiles import profile_rows
from distrec.data.dataset import PreparedDataset, write_prepared
from distrec.data.schema import interactions_table


def fake_original_ids(original_type: pa.DataType, n_fake: int) -> pa.Array:
    """Original ids for fake users that cannot collide with a source's ids: ``fake:<j>`` for string
    ids, ``-1 - j`` for integer ids (sources number users from 0 or 1)."""
    if pa.types.is_integer(original_type):
        return pa.array(-1 - np.arange(n_fake, dtype=np.int64), original_type)
    return pa.array([f"fake:{j}" for j in range(n_fake)], original_type)


def write_poisoned(dataset: PreparedDataset, fake: torch.Tensor, out: str | Path, attack_meta: dict) -> PreparedDataset:
    """Copy ``dataset`` to ``out`` with the fake users' interactions appended to ``train`` (user ids
    ``n_users .. n_users + n_fake - 1``, rating 1, no timestamp) and ``attack_meta`` recorded under
    ``attack`` in the metadata. Other tables are copied unchanged."""
    tables = {name: dataset.table(name) for name in dataset.metadata["tables"]}
    if bool(pc.any(tables["train"].column("is_fake")).as_py()):
        raise ValueError(f"{dataset.uri} already holds fake users; poison a clean dataset")
    n_real, n_fake = dataset.n_users, fake.shape[0]
    rows, items = profile_rows(fake)
    tables["train"] = pa.concat_tables(
        [tables["train"], interactions_table(rows + n_real, items, is_fake=np.ones(len(rows), bool))]
    )
    user_map = tables["user_map"]
    extra = pa.table(
        {
            "original": fake_original_ids(user_map.schema.field("original").type, n_fake),
            "internal": pa.array(np.arange(n_real, n_real + n_fake, dtype=np.int64)),
        }
    ).cast(user_map.schema)
    tables["user_map"] = pa.concat_tables([user_map, extra])
    meta = {k: v for k, v in dataset.metadata.items() if k != "tables"}
    meta.update(n_users=n_real + n_fake, n_real_users=n_real, attack=attack_meta, clean_dataset=dataset.uri)
    return write_prepared(tables, meta, out)


def clean_original(poisoned: PreparedDataset, out: str | Path) -> PreparedDataset:
    """The dataset ``poisoned`` was made from, rebuilt from it: the real users' interactions and ids only, no
    attack in the metadata."""
    n_real = poisoned.metadata.get("n_real_users")
    if poisoned.metadata.get("attack") is None or n_real is None:
        raise ValueError(f"{poisoned.uri} is not a poisoned dataset (no 'attack' in its metadata)")
    tables = {name: poisoned.table(name) for name in poisoned.metadata["tables"]}
    tables["train"] = tables["train"].filter(pc.invert(tables["train"].column("is_fake")))
    tables["user_map"] = tables["user_map"].filter(pc.less(tables["user_map"].column("internal"), n_real))
    drop = ("tables", "attack", "n_real_users", "clean_dataset", "content_id")
    meta = {k: v for k, v in poisoned.metadata.items() if k not in drop}
    meta["n_users"] = n_real
    return write_prepared(tables, meta, out)


def fake_profiles(poisoned: PreparedDataset) -> tuple[np.ndarray, np.ndarray]:
    """The fake users' training interactions of ``poisoned``: (row of each fake user from 0, internal item id)."""
    train = poisoned.table("train")
    fake = train.filter(train.column("is_fake"))
    users = fake.column("user_id").to_numpy()
    return users - int(poisoned.metadata.get("n_real_users", users.min(initial=0))), fake.column("item_id").to_numpy()
