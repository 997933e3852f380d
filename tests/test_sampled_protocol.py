"""The NCF leave-one-out protocol (99 stored negatives) and the DeepCF MLP victim (RAWP-FT's)."""

import numpy as np
import pyarrow as pa
import pytest
import torch

from distrec.data.dataset import prepare, write_prepared
from distrec.data.preprocess import PrepareConfig
from distrec.data.synthetic import make_synthetic
from distrec.metrics.sampled import candidates, sampled_metrics
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
    raw.interactions = raw.interactions.drop(["timestamp"]).append_column(
        "timestamp", pa.nulls(raw.interactions.num_rows, pa.int64())
    )
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
    model = create_victim(
        "deepcf",
        loo_dataset.n_users,
        loo_dataset.n_items,
        proj_dim=32,
        tower=[32, 16, 8],
        epochs=5,
        lr=1e-3,
        batch_size=256,
        backend="memory",
    )
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
        assert torch.allclose(
            model.score(torch.arange(5)).gather(1, torch.as_tensor(cands[:5])),
            model.score_pairs(torch.arange(5), torch.as_tensor(cands[:5])),
            atol=1e-5,
        )
        assert sampled_metrics(model.score_pairs, u, cands)["hr@10"] > 0.2  # random candidates: 0.10


@pytest.fixture(scope="module")
def trained_deepcf(loo_dataset):
    model = create_victim(
        "deepcf",
        loo_dataset.n_users,
        loo_dataset.n_items,
        proj_dim=32,
        tower=[32, 16, 8],
        epochs=5,
        lr=1e-3,
        batch_size=256,
        backend="memory",
    )
    model.fit(loo_dataset, progress=False)
    return model.eval()


def test_weight_fgsm_moves_every_row_by_eps_of_its_norm_and_pgd_stays_in_the_ball(trained_deepcf, loo_dataset):
    from distrec.attacks.weights import WeightAttack, WeightAttackConfig

    u, cands = candidates(loo_dataset.table("test"), loo_dataset.table("test_negatives"))
    users, items = torch.as_tensor(u[:8]), torch.as_tensor(cands[:8])
    fgsm = WeightAttack(trained_deepcf, WeightAttackConfig(eps=0.01, method="fgsm", batch_users=8))
    for d, (_, w, axis) in zip(fgsm(users, items), fgsm.matrices):
        moved = d.norm(dim=axis) > 0  # rows of dead units have no gradient
        assert moved.float().mean() > 0.5 and torch.allclose(
            d.norm(dim=axis)[moved], 0.01 * w.norm(dim=axis)[moved], rtol=1e-4
        )
    pgd = WeightAttack(trained_deepcf, WeightAttackConfig(eps=0.01, method="pgd", steps=4, alpha=0.008, batch_users=8))
    for d, (_, w, axis) in zip(pgd(users, items), pgd.matrices):
        assert (d.norm(dim=axis) <= 0.01 * w.norm(dim=axis) * (1 + 1e-4)).all()


def test_the_weight_attack_lowers_sampled_hr_and_more_with_eps(trained_deepcf, loo_dataset):
    from distrec.attacks.weights import WeightAttackConfig, attacked_scores

    u, cands = candidates(loo_dataset.table("test"), loo_dataset.table("test_negatives"))
    users, items = torch.as_tensor(u), torch.as_tensor(cands)
    clean = sampled_metrics(trained_deepcf.score_pairs, u, cands)["hr@10"]
    hr = {
        eps: sampled_metrics(
            lambda a, b, s=attacked_scores(trained_deepcf, WeightAttackConfig(eps=eps), users, items): s,
            u,
            cands,
            chunk_users=len(u),
        )["hr@10"]
        for eps in (0.01, 1.0)
    }
    # a small eps may move HR either way on this small model; a large one must hurt it
    assert abs(hr[0.01] - clean) < 0.03 and hr[1.0] < clean - 0.05


def test_rawp_draws_half_the_matrices_per_epoch_and_awp_trains(loo_dataset):
    from distrec.defenses import create_defense

    model = create_victim(
        "deepcf",
        loo_dataset.n_users,
        loo_dataset.n_items,
        proj_dim=32,
        tower=[32, 16, 8],
        epochs=3,
        lr=1e-3,
        batch_size=256,
        backend="memory",
    )
    rawp = create_defense("rawp", gamma=0.005, seed=1).apply(model)
    masks = []
    for epoch in range(40):
        model.objective.start(epoch, 6)
        masks.append(model.objective.mask)
        assert 0.8 * 0.005 <= model.objective.gamma <= 1.2 * 0.005
    assert len({tuple(m) for m in masks}) > 10 and 0.35 < np.mean(masks) < 0.65
    history = rawp.fit(loo_dataset, progress=False)
    plain = create_victim(
        "deepcf",
        loo_dataset.n_users,
        loo_dataset.n_items,
        proj_dim=32,
        tower=[32, 16, 8],
        epochs=3,
        lr=1e-3,
        batch_size=256,
        backend="memory",
    )
    plain.fit(loo_dataset, progress=False)
    assert history[-1]["loss"] < history[0]["loss"] and not torch.allclose(plain.out.weight, rawp.out.weight)
    awp = create_defense("awp", gamma=0.01).apply(
        create_victim(
            "neumf", loo_dataset.n_users, loo_dataset.n_items, dim=8, mlp_layers=[16, 8], epochs=2, backend="memory"
        )
    )
    assert awp.fit(loo_dataset, progress=False)[-1]["loss"] > 0
    with pytest.raises(ValueError, match=r"awp: gamma: Input should be greater than 0 \(got 0\)"):
        create_defense("awp", gamma=0)


def test_rawp_ft_scores_every_matrix_fine_tunes_the_least_robust_and_interpolates(tmp_path):
    from distrec.defenses import create_defense

    raw = make_synthetic(n_users=200, n_items=120, avg_degree=15, image_size=0, seed=2)
    tables, meta = prepare(raw, PrepareConfig(split="loo", valid_ratio=0.1, test_negatives=50, seed=2), "synthetic")
    ds = write_prepared(tables, meta, tmp_path / "ds")
    model = create_victim(
        "deepcf",
        ds.n_users,
        ds.n_items,
        proj_dim=16,
        tower=[16, 8],
        epochs=3,
        lr=1e-3,
        batch_size=256,
        backend="memory",
    )
    before = {n: w.detach().clone() for n, w, _ in model.weight_matrices()}
    config = {
        "gamma": 0.005,
        "robustness_batches": 5,
        "ft_epochs": 2,
        "ft_batches": 10,
        "select_users": 60,
        "select_negatives": 50,
        "alphas": [0.0, 0.5, 1.0],
    }
    history = create_defense("rawp_ft", **config).apply(model).fit(ds, progress=False)
    scores = [r for r in history if r.get("stage") == "robustness"]
    assert [r["layer"] for r in scores] == [n for n, _, _ in model.weight_matrices()]
    tuned = [r for r in scores if r["fine_tuned"]]
    assert len(tuned) == 1 and tuned[0]["score"] == max(r["score"] for r in scores) and tuned[0]["score"] > 0
    interp = history[-1]
    assert interp["stage"] == "interpolation" and interp["alpha"] in (0.0, 0.5, 1.0)
    floor = interp["valid"]["0.0"]["robust_hr@10"]
    assert interp["valid"][str(interp["alpha"])]["robust_hr@10"] >= floor
    assert len([r for r in history if r.get("stage") == "fine_tune"]) == 2
    assert all(p.requires_grad for p in model.parameters())  # the frozen layers are trainable again
    assert any(not torch.equal(before[n], w) for n, w, _ in model.weight_matrices())


def test_train_cli_takes_a_defense_and_reports_the_sampled_protocol(tmp_path, capsys):
    import json

    from distrec.cli import main

    data = str(tmp_path / "ds")
    assert (
        main(
            [
                "data",
                "synthetic",
                "--out",
                data,
                "--split",
                "loo",
                "--test-negatives",
                "50",
                "--set",
                "n_users=150",
                "--set",
                "n_items=100",
                "--json",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["train", "wrmf", "--data", data, "--set", "defense=rawp"]) == 2
    assert (
        "--set: defense: defense 'rawp' cannot be applied to victim 'wrmf'; it supports deepcf, neumf"
        in capsys.readouterr().err
    )
    assert main(["train", "deepcf", "--data", data, "--set", "defense=rawp", "--set", "defense.gama=1"]) == 2
    assert "--set: defense.gama: unknown key; valid keys: gamma, layer_prob" in capsys.readouterr().err
    argv = [
        "train",
        "deepcf",
        "--data",
        data,
        "--set",
        "epochs=1",
        "--set",
        "proj_dim=8",
        "--set",
        "tower=[8]",
        "--set",
        "defense=awp",
        "--set",
        "defense.gamma=0.02",
        "--json",
    ]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["defense"] == {"name": "awp", "config": {"gamma": 0.02}} and set(result["metrics"]["sampled"]) == {
        "hr@10",
        "ndcg@10",
    }
