import json
import math

import numpy as np
import pytest
import torch

from distrec.data.matrix import UserItemCSR
from distrec.metrics.ranking import full_ranking_metrics
from distrec.models import Victim, create_victim


def test_metrics_equal_hand_computed_values():
    # 2 users, 6 items. Scores give user 0 the ranking 5,4,3,2,1,0 and user 1 the ranking 0,1,2,...
    scores = torch.tensor([[0.0, 1, 2, 3, 4, 5], [5.0, 4, 3, 2, 1, 0]])
    train = UserItemCSR.from_arrays(np.array([0, 1]), np.array([5, 0]), 2, 6)  # masked: user0 item5, user1 item0
    test = UserItemCSR.from_arrays(np.array([0, 0, 1]), np.array([3, 0, 2]), 2, 6)
    m = full_ranking_metrics(lambda u: scores[u], train, test, ks=(2, 3))
    # user 0 ranking after masking: 4,3,2,... -> hit at rank 2 (item 3); user 1 ranking: 1,2,3,... -> hit at rank 2 (item 2)
    assert m["recall@2"] == pytest.approx((1 / 2 + 1 / 1) / 2)
    assert m["precision@2"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert m["hr@2"] == pytest.approx(1.0)
    d = 1 / math.log2(3)
    assert m["ndcg@2"] == pytest.approx((d / (1 + d) + d / 1) / 2)
    assert m["n_users"] == 2


def test_chunking_does_not_change_metrics():
    rng = np.random.default_rng(0)
    scores = torch.tensor(rng.random((50, 30)), dtype=torch.float32)
    train = UserItemCSR.from_arrays(rng.integers(0, 50, 300), rng.integers(0, 30, 300), 50, 30)
    test = UserItemCSR.from_arrays(rng.integers(0, 50, 100), rng.integers(0, 30, 100), 50, 30)
    a = full_ranking_metrics(lambda u: scores[u], train, test, ks=(5, 10), chunk_users=7)
    b = full_ranking_metrics(lambda u: scores[u], train, test, ks=(5, 10), chunk_users=1000)
    assert a == pytest.approx(b)


def test_unknown_victim_config_key_is_named():
    with pytest.raises(ValueError, match=r"bpr: dimension: unknown key; valid keys: .*\bdim\b"):
        create_victim("bpr", 3, 4, dimension=8)


def test_bpr_learns_and_round_trips(synthetic_dataset, tmp_path):
    ds = synthetic_dataset
    model = create_victim(
        "bpr", ds.n_users, ds.n_items, dim=16, epochs=15, lr=1e-2, batch_size=512, reg=1e-2, seed=0, backend="memory"
    )
    history = model.fit(ds, progress=False)
    assert history[-1]["loss"] < 0.8 * history[0]["loss"]
    train = UserItemCSR.from_table(ds.table("train"), ds.n_users, ds.n_items)
    test = UserItemCSR.from_table(ds.table("test"), ds.n_users, ds.n_items)
    learned = full_ranking_metrics(model.score, train, test, (20,))["recall@20"]
    untrained = create_victim("bpr", ds.n_users, ds.n_items, dim=16, seed=0)
    assert learned > 1.5 * full_ranking_metrics(untrained.score, train, test, (20,))["recall@20"]
    users = torch.arange(10)
    top = model.topk(users, 5, exclude=train)
    r, c = train.rows(users.numpy())
    assert not set(zip(r.tolist(), c.tolist())) & {(u, i) for u in range(10) for i in top[u].tolist()}
    model.save(tmp_path / "ckpt")
    restored = Victim.load(tmp_path / "ckpt")
    assert torch.equal(restored.score(users), model.score(users))
    assert json.loads((tmp_path / "ckpt/config.json").read_text())["config"]["dim"] == 16


def test_early_stopping_keeps_the_best_weights(synthetic_dataset):
    ds = synthetic_dataset
    model = create_victim(
        "bpr", ds.n_users, ds.n_items, dim=8, epochs=12, lr=5e-2, eval_every=2, patience=1, seed=0, backend="memory"
    )
    history = model.fit(ds, valid_split="test", progress=False)
    evals = [h["valid_recall@20"] for h in history if "valid_recall@20" in h]
    train = UserItemCSR.from_table(ds.table("train"), ds.n_users, ds.n_items)
    test = UserItemCSR.from_table(ds.table("test"), ds.n_users, ds.n_items)
    assert full_ranking_metrics(model.score, train, test, (20,))["recall@20"] == pytest.approx(max(evals))


def test_target_metrics_hand_computed():
    from distrec.metrics.targets import target_metrics

    # 3 users x 5 items; targets 3 and 4. user 2 is fake and is not passed as a real user.
    scores = torch.tensor([[5.0, 4, 3, 2, 1], [1.0, 2, 3, 4, 5], [0.0, 0, 0, 9, 9]])
    train = UserItemCSR.from_arrays(np.array([0, 1]), np.array([0, 4]), 3, 5)  # user 1 has seen target 4
    m = target_metrics(lambda u: scores[u], train, [3, 4], np.array([0, 1]), ks=(1, 2))
    # user 0 ranking after masking item 0: 1,2,3,4 -> target 3 at rank 3, target 4 at rank 4
    # user 1 ranking after masking item 4: 3,2,1,0 -> target 3 at rank 1; target 4 not eligible
    assert m["t_hr@1"] == pytest.approx((1 / 2 + 0 / 1) / 2)
    assert m["t_hr@2"] == pytest.approx((1 / 2 + 0 / 1) / 2)
    assert m["t_ndcg@1"] == pytest.approx((1 / 2 * 1.0 + 0) / 2)
    assert m["hitone@1"] == pytest.approx(1 / 2) and m["hitone@2"] == pytest.approx(1 / 2)
