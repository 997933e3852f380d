"""The NCF leave-one-out protocol (99 stored negatives) and the DeepCF MLP victim (RAWP-FT's)."""

import numpy as np
import pyarrow as pa
import pytest
import torch

from distrec.data.dataset import prepare, write_prepared
from distrec.data.preprocess import PrepareConfig
from distrec.data.synthetic import make_synthetic
from distrec.evaluation.sampled import candidates, sampled_metrics
from distrec.models import create_victim


@pytest.fixture(scope="module")
def loo_dataset(tmp_path_factory):
    raw = make_synthetic(n_users=300, n_items=200, avg_degree=15, image_size=0, seed=1)
    tables, meta = prepare(raw, PrepareConfig(split="loo", test_negatives=99, seed=1), "synthetic")
    return write_prepared(tables, meta, tmp_path_factory.mktemp("loo") / "ds")


def test_negatives_are_stored_unseen_distinct_and_seeded(loo_dataset):
    negatives = loo_dataset.table("test_negatives")
    users = negatives.column("user_id").to_numpy()
    lists = negatives.column("item_ids").to_pylist()
    assert len(users) == loo_dataset.table("test").num_rows and all(len(x) == len(set(x)) == 99 for x in lists)
    seen = {}
    for split in ("train", "test"):
        t = loo_dataset.table(split)
        for u, i in zip(t.column("user_id").to_pylist(), t.column("item_id").to_pylist()):
            seen.setdefault(u, set()).add(i)
    assert all(not (set(x) & seen[u]) for u, x in zip(users.tolist(), lists))
    raw = make_synthetic(n_users=300, n_items=200, avg_degree=15, image_size=0, seed=1)
    again, _ = prepare(raw, PrepareConfig(split="loo", test_negatives=99, seed=1), "synthetic")
    assert again["test_negatives"].column("item_ids").to_pylist() == lists


def test_leave_one_out_without_timestamps_draws_the_held_out_item_by_seed():
    raw = make_synthetic(n_users=100, n_items=80, avg_degree=10, image_size=0, seed=3)
    raw.interactions = raw.interactions.drop(["timestamp"]).append_column("timestamp", pa.nulls(raw.interactions.num_rows, pa.int64()))
    tables, meta = prepare(raw, PrepareConfig(split="loo", seed=5), "synthetic")
    assert meta["split_method"] == "loo_random" and any("drawn at random (seed 5)" in n for n in meta["notes"])
    test = tables["test"].column("user_id").to_numpy()
    assert len(test) == len(np.unique(test))
    other, _ = prepare(raw, PrepareConfig(split="loo", seed=6), "synthetic")
    assert other["test"].column("item_id").to_pylist() != tables["test"].column("item_id").to_pylist()


def test_sampled_metrics_by_hand():
    items = np.array([[0, 1, 2, 3], [4, 5, 6, 7]])
    scores = {0: [5.0, 1, 2, 3], 1: [2.0, 3, 2, 1]}  # user 0: held-out first; user 1: one above, one tie
    fn = lambda u, i: torch.tensor([scores[int(x)] for x in u])  # noqa: E731
    m = sampled_metrics(fn, np.array([0, 1]), items, ks=(1, 3))
    assert m["hr@1"] == 0.5 and m["hr@3"] == 1.0  # the tie counts against the model: user 1 ranks 2
    assert m["ndcg@3"] == pytest.approx((1 + 1 / np.log2(4)) / 2)
    const = sampled_metrics(lambda u, i: torch.zeros(i.shape), np.array([0, 1]), items, ks=(3,))
    assert const["hr@3"] == 0.0


def test_deepcf_sparse_projection_equals_the_dense_layer_and_it_learns(loo_dataset):
    model = create_victim("deepcf", loo_dataset.n_users, loo_dataset.n_items, proj_dim=32, tower=[32, 16, 8], epochs=5, lr=1e-3, batch_size=256, backend="memory")
    model.attach(loo_dataset)
    train = loo_dataset.table("train")
    dense = torch.zeros(loo_dataset.n_users, loo_dataset.n_items)
    dense[train.column("user_id").to_numpy(), train.column("item_id").to_numpy()] = 1
    users, items = torch.arange(7), torch.tensor([3, 9, 0])
    assert torch.allclose(model.users(users), dense[users] @ model.user_proj + model.user_bias, atol=1e-5)
    assert torch.allclose(model.items(items), dense[:, items].T @ model.item_proj + model.item_bias, atol=1e-5)
    assert len(model.weight_matrices()) == 2 + 3 + 1
    history = model.fit(loo_dataset, progress=False)
    assert history[-1]["loss"] < history[0]["loss"]
    model.eval()
    u, cands = candidates(loo_dataset.table("test"), loo_dataset.table("test_negatives"))
    with torch.no_grad():
        assert torch.allclose(model.score(torch.arange(5)).gather(1, torch.as_tensor(cands[:5])), model.score_pairs(torch.arange(5), torch.as_tensor(cands[:5])), atol=1e-5)
        assert sampled_metrics(model.score_pairs, u, cands)["hr@10"] > 0.2  # random candidates: 0.10
