import numpy as np
import pyarrow as pa
import pytest

from distrec.data.dataset import prepare, write_prepared
from distrec.data.preprocess import PrepareConfig, kcore_mask, split_rows
from distrec.data.source import RawDataset, raw_interactions


def random_raw(n_users=50, n_items=40, n=800, seed=0, with_ts=True):
    rng = np.random.default_rng(seed)
    keys = np.unique(rng.integers(0, n_users, n) * 1000 + rng.integers(0, n_items, n))
    users, items = keys // 1000 + 100, keys % 1000 + 5000  # source ids are not 0-based
    ts = rng.integers(0, 10_000, len(keys)) if with_ts else None
    return RawDataset("r", interactions=raw_interactions(users, items, rng.integers(1, 6, len(keys)).astype(float), ts))


def test_kcore_property_and_fixpoint():
    rng = np.random.default_rng(1)
    users, items = rng.integers(0, 100, 600), rng.integers(0, 80, 600)
    keep = kcore_mask(users, items, 5)
    assert 0 < keep.sum() < len(users)
    assert np.bincount(users[keep]).max() >= 5
    assert all(np.bincount(users[keep])[u] >= 5 for u in np.unique(users[keep]))
    assert all(np.bincount(items[keep])[i] >= 5 for i in np.unique(items[keep]))
    # maximality: re-adding any dropped row's user and item would break the property only if filtered again
    assert np.array_equal(kcore_mask(users[keep], items[keep], 5), np.ones(keep.sum(), bool))


def test_ratio_split_is_seeded_and_keeps_a_training_item():
    users = np.repeat(np.arange(30), np.arange(1, 31))
    a, _ = split_rows(users, None, None, False, PrepareConfig(split="ratio", test_ratio=0.2, seed=3))
    b, _ = split_rows(users, None, None, False, PrepareConfig(split="ratio", test_ratio=0.2, seed=3))
    c, _ = split_rows(users, None, None, False, PrepareConfig(split="ratio", test_ratio=0.2, seed=4))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    for u in range(30):
        n = u + 1
        assert (a[users == u] == 2).sum() == min(int(np.floor(n * 0.2 + 0.5)), n - 1)
        assert (a[users == u] == 0).sum() >= 1


def test_leave_one_out_and_temporal_use_time():
    users = np.array([0, 0, 0, 1, 1])
    ts = np.array([30, 10, 20, 5, 7])
    loo, _ = split_rows(users, ts, None, False, PrepareConfig(split="loo", valid_ratio=0.1))
    assert loo.tolist() == [2, 0, 1, 0, 2]
    temporal, _ = split_rows(users, ts, None, False, PrepareConfig(split="temporal", test_ratio=0.4))
    assert ts[temporal == 2].min() >= ts[temporal == 0].max()
    with pytest.raises(ValueError, match="needs timestamps"):
        split_rows(users, None, None, False, PrepareConfig(split="temporal"))
    labels, method = split_rows(users, None, None, False, PrepareConfig(split="loo", seed=1))
    assert method == "loo_random" and sorted(users[labels == 2].tolist()) == [0, 1]  # one held out per user, by seed


def test_threshold_and_kcore_renumber_and_keep_original_ids(tmp_path):
    raw = random_raw()
    tables, meta = prepare(raw, PrepareConfig(implicit_threshold=3, kcore=3, split="ratio", seed=0), "r")
    ds = write_prepared(tables, meta, tmp_path / "d")
    train = ds.interactions()
    assert set(train.column("rating").to_pylist()) == {1.0}
    kept_in_source = raw.interactions.filter(pa.compute.greater_equal(raw.interactions.column("rating"), 3)).num_rows
    assert train.num_rows == kept_in_source - meta["dropped_by_kcore"]
    users = train.column("user_id").to_numpy()
    assert users.max() + 1 == ds.n_users == len(np.unique(users))  # contiguous
    # every internal id maps back to an original id that had these interactions in the source
    umap = dict(
        zip(ds.table("user_map").column("internal").to_pylist(), ds.table("user_map").column("original").to_pylist())
    )
    imap = dict(
        zip(ds.table("item_map").column("internal").to_pylist(), ds.table("item_map").column("original").to_pylist())
    )
    source_pairs = set(zip(raw.interactions.column("user").to_pylist(), raw.interactions.column("item").to_pylist()))
    assert all(
        (umap[u], imap[i]) in source_pairs
        for u, i in zip(train.column("user_id").to_pylist(), train.column("item_id").to_pylist())
    )


def test_a_threshold_needs_ratings_and_must_leave_interactions():
    users, items = np.array([1, 1, 2]), np.array([7, 8, 7])
    pairs = RawDataset("pairs", interactions=raw_interactions(users, items))
    pairs.sources.append({"file": "pairs.dat.gz"})
    tables, _ = prepare(pairs, PrepareConfig(split="ratio"), "r")
    assert set(tables["train"].column("rating").to_pylist()) == {1.0}  # no ratings: each interaction counts 1
    with pytest.raises(ValueError, match=r"implicit_threshold=4: pairs as read from pairs.dat.gz has no ratings"):
        prepare(pairs, PrepareConfig(implicit_threshold=4), "r")
    rated = RawDataset("rated", interactions=raw_interactions(users, items, np.array([1.0, 2.0, 3.0])))
    with pytest.raises(ValueError, match="leave none of the 3 interactions"):
        prepare(rated, PrepareConfig(implicit_threshold=4), "r")
    holes = RawDataset(
        "holes",
        interactions=raw_interactions(users, items).set_column(2, "rating", pa.array([4.0, None, 5.0], pa.float32())),
    )
    with pytest.raises(ValueError, match="1 of 3 interactions have no rating"):
        prepare(holes, PrepareConfig(), "r")


def test_prepare_is_deterministic(tmp_path):
    a = write_prepared(*prepare(random_raw(), PrepareConfig(seed=7), "r"), tmp_path / "a")
    b = write_prepared(*prepare(random_raw(), PrepareConfig(seed=7), "r"), tmp_path / "b")
    for split in ("train", "test"):
        assert a.table(split).equals(b.table(split))


def test_a_job_dataset_that_prepares_to_nothing_is_a_config_error(tmp_path):
    from distrec.config import ConfigError
    from distrec.data.spec import DatasetSpec, materialise_dataset

    spec = DatasetSpec(synthetic={"n_users": 40, "n_items": 60}, prepare={"implicit_threshold": 100})
    with pytest.raises(ConfigError, match=r"^dataset.prepare: implicit_threshold=100.0 and kcore=0 leave none"):
        materialise_dataset(spec, str(tmp_path))
    assert not (tmp_path / "data").exists()  # nothing half-written for a resume to pick up
