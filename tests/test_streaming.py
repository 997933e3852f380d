import numpy as np
import torch

from distrec.data.dataset import PreparedDataset
from distrec.data.matrix import contains
from distrec.data.streaming import InteractionStream, image_dataset, pixels_to_tensor, positive_keys, sample_negatives


def test_negatives_avoid_positives_and_are_seeded():
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 20, 400), rng.integers(0, 30, 400)
    keys = positive_keys(users, items, 30)
    neg = sample_negatives(users, items, keys, 30, 4, seed=1, epoch=0)
    assert not np.isin(users[:, None] * 30 + neg, keys).any()
    assert np.array_equal(neg, sample_negatives(users, items, keys, 30, 4, seed=1, epoch=0))
    assert not np.array_equal(neg, sample_negatives(users, items, keys, 30, 4, seed=1, epoch=1))
    # independent of batching: the second half alone gets the same negatives
    assert np.array_equal(neg[200:], sample_negatives(users[200:], items[200:], keys, 30, 4, seed=1, epoch=0))


def test_membership_by_binary_search_agrees_with_a_set_for_numpy_and_torch():
    rng = np.random.default_rng(3)
    keys = np.unique(rng.integers(0, 500, 120))
    probe = rng.integers(-5, 510, (40, 7))  # below, inside and above the key range
    expected = np.isin(probe, keys)
    assert expected.any() and not expected.all()
    got_np = contains(keys, probe)
    assert isinstance(got_np, np.ndarray) and np.array_equal(got_np, expected)
    got_torch = contains(torch.as_tensor(keys), torch.as_tensor(probe))
    assert isinstance(got_torch, torch.Tensor) and np.array_equal(got_torch.numpy(), expected)
    assert not contains(keys[:0], probe).any() and contains(keys[:0], probe).shape == probe.shape
    assert not contains(torch.as_tensor(keys[:0]), torch.as_tensor(probe)).any()


def test_ray_data_and_memory_paths_give_identical_batches(ray_session, synthetic_dataset):
    uri = "file://" + synthetic_dataset.root
    kw = dict(batch_size=500, num_negatives=2, seed=5, shuffle_window=1200)
    ray_batches = list(InteractionStream(uri, backend="ray", **kw).epoch(3))
    mem_batches = list(InteractionStream(synthetic_dataset, backend="memory", **kw).epoch(3))
    assert len(ray_batches) == len(mem_batches) > 1
    for a, b in zip(ray_batches, mem_batches):
        for k in ("user_id", "item_id", "neg_item"):
            assert torch.equal(a[k], b[k])
    rows = torch.cat([b["user_id"] * 10_000 + b["item_id"] for b in mem_batches]).sort().values
    train = synthetic_dataset.table("train")
    expected = np.sort(train.column("user_id").to_numpy() * 10_000 + train.column("item_id").to_numpy())
    assert np.array_equal(rows.numpy(), expected)  # every training row exactly once per epoch


def test_user_uniform_sampling_weighs_every_user_the_same(synthetic_dataset):
    """LightGCN's sampler: users uniform (not by degree), each row one of that user's training items."""
    stream = InteractionStream(synthetic_dataset, batch_size=700, seed=2, backend="memory", sampling="user")
    batches = list(stream.epoch(0))
    users, items = (torch.cat([b[k] for b in batches]).numpy() for k in ("user_id", "item_id"))
    train = synthetic_dataset.table("train")
    t_users, t_items = train.column("user_id").to_numpy(), train.column("item_id").to_numpy()
    assert len(users) == train.num_rows and np.isin(users * 10_000 + items, t_users * 10_000 + t_items).all()
    degree, drawn = np.bincount(t_users), np.bincount(users, minlength=len(np.bincount(t_users)))
    active = degree > 0
    heavy, light = degree >= np.quantile(degree[active], 0.75), active & (degree <= np.quantile(degree[active], 0.25))
    share = lambda mask: drawn[mask].sum() / mask.sum()  # noqa: E731  (rows per user in a group)
    assert abs(share(heavy) / share(light) - 1) < 0.25 < degree[heavy].mean() / degree[light].mean() - 1
    again = torch.cat([b["item_id"] for b in stream.epoch(0)]).numpy()
    assert np.array_equal(again, items) and not np.array_equal(
        torch.cat([b["item_id"] for b in stream.epoch(1)]).numpy(), items
    )


def test_user_uniform_sampling_needs_the_memory_backend(synthetic_dataset):
    import pytest

    from distrec.config import ConfigError, check
    from distrec.models.trainer import TrainConfig

    with pytest.raises(ValueError, match="needs backend='memory'"):
        InteractionStream(synthetic_dataset, backend="ray", sampling="user")
    with pytest.raises(
        ConfigError, match="^victim: sampling: Input should be 'interaction' or 'user' \\(got 'users'\\)"
    ):
        check(TrainConfig, {"sampling": "users"}, "victim")


def test_images_decode_lazily_through_ray_data(ray_session, synthetic_dataset):
    batch = image_dataset(synthetic_dataset, size=8).take_batch(4, batch_format="numpy")
    assert batch["pixels"].shape == (4, 8, 8, 3) and batch["pixels"].dtype == np.uint8
    x = pixels_to_tensor(batch["pixels"])
    assert x.shape == (4, 3, 8, 8) and x.min() >= 0.0 and x.max() <= 1.0
    resized = image_dataset(PreparedDataset(synthetic_dataset.uri), size=4).take_batch(1, batch_format="numpy")
    assert resized["pixels"].shape == (1, 4, 4, 3)
