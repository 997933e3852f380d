import numpy as np
import torch

from distrec.data.dataset import PreparedDataset
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


def test_images_decode_lazily_through_ray_data(ray_session, synthetic_dataset):
    batch = image_dataset(synthetic_dataset, size=8).take_batch(4, batch_format="numpy")
    assert batch["pixels"].shape == (4, 8, 8, 3) and batch["pixels"].dtype == np.uint8
    x = pixels_to_tensor(batch["pixels"])
    assert x.shape == (4, 3, 8, 8) and x.min() >= 0.0 and x.max() <= 1.0
    resized = image_dataset(PreparedDataset(synthetic_dataset.uri), size=4).take_batch(1, batch_format="numpy")
    assert resized["pixels"].shape == (1, 4, 4, 3)
