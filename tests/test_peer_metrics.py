"""Peers' target metrics beside distrec's: each by hand, and a study that asks for them gets new cell ids."""

import numpy as np
import pytest
import torch
import yaml

from distrec.data.matrix import UserItemCSR
from distrec.metrics.peers import arlib_hit_ratio, peer_metrics, revadv_hit_one
from distrec.metrics.targets import target_metrics
from distrec.study.runner import study_from_dict

# users 0, 1 real, user 2 fake; 5 items, target 4
SCORES = torch.tensor([[0.9, 0.1, 0.2, 0.3, 0.8], [0.1, 0.9, 0.8, 0.7, 0.6], [0.0, 0.0, 0.0, 0.1, 1.0]])
TRAIN = UserItemCSR.from_arrays(np.array([0, 1, 2]), np.array([0, 1, 4]), 3, 5)  # the fake user holds the target
score = lambda users: SCORES[users]  # noqa: E731


def test_arlib_counts_fake_users_and_does_not_mask_training_items():
    # unmasked top-2: user 0 {0, 4} hit; user 1 {1, 2} miss; fake user 2 {4, 3} hit -> 2 of 3 users x 1 target
    assert arlib_hit_ratio(score, 3, [4], (2,))[2] == pytest.approx(2 / 3)
    # distrec's T-HR@2 over the real users, training items masked: user 0 {4, 3} hit, user 1 {2, 3} miss
    assert target_metrics(score, TRAIN, [4], np.array([0, 1]), (2,))["t_hr@2"] == pytest.approx(0.5)


def test_revadv_hitone_counts_only_real_users_with_a_test_item():
    test = UserItemCSR.from_arrays(np.array([1]), np.array([3]), 3, 5)  # only user 1 has a test item
    hit = revadv_hit_one(score, TRAIN, test, [4], np.array([0, 1]), (2, 3))
    assert hit[2] == 0.0  # user 1 misses; user 0 not counted
    assert hit[3] == 1.0  # masked top-3 of user 1: {2, 3, 4}
    both = peer_metrics(["arlib", "revadv"], score, TRAIN, test, [4], 2, (2, 3))
    assert set(both) == {"arlib_hr@2", "arlib_hr@3", "revadv_hitone@2", "revadv_hitone@3"}


STUDY = """
dataset: {synthetic: {n_users: 60, n_items: 80, avg_degree: 8, image_size: 0, seed: 1}}
threat: {n_fake: 2, n_targets: 2, target_bucket: any, seed: 0}
attacks: [{name: random}]
victims: {wrmf: {factors: 4, iterations: 2}}
"""


def test_a_study_with_peer_metrics_has_new_cells_and_lists_them_beside(tmp_path):
    raw = yaml.safe_load(STUDY)
    plain = study_from_dict(raw, "s.yaml")
    peers = study_from_dict(dict(raw, peer_metrics=["arlib", "revadv"]), "s.yaml")
    cells = lambda s: {u.id: u for u in s.plan(str(tmp_path / "store")) if u.stage == "cell"}  # noqa: E731
    a, b = cells(plain), cells(peers)
    assert len(a) == len(b) and not set(a) & set(b)  # results that hold more metrics are other results
    assert all(u.payload["peers"] == ["arlib", "revadv"] for u in b.values())
    assert {"arlib_hr@50", "revadv_hitone@50"} <= set(peers.extra_metrics)
    with pytest.raises(ValueError, match=r"s.yaml: peer_metrics.0: Input should be 'arlib' or 'revadv'"):
        study_from_dict(dict(raw, peer_metrics=["ncf"]), "s.yaml")


def test_measure_adds_the_peers_it_is_asked_for(synthetic_dataset):
    from distrec.evaluation.attack_effect import measure
    from distrec.models.registry import create_victim

    ds = synthetic_dataset
    model = create_victim("wrmf", ds.n_users, ds.n_items, factors=4, iterations=2)
    model.fit(ds, progress=False)
    plain = measure(model, ds, np.array([1, 2]), ds.n_users, ks=(10,))
    both = measure(model, ds, np.array([1, 2]), ds.n_users, ks=(10,), peers=("arlib", "revadv"))
    assert set(both) - set(plain) == {"arlib_hr@10", "revadv_hitone@10"}
    assert {k: both[k] for k in plain} == plain
