"""Every victim: learns (loss decreases, beats an untrained model), saves and loads, and the
algorithm-specific checks (WRMF solve vs least squares, LightGCN propagation vs dense matrices)."""

import numpy as np
import pytest
import torch

from distrec.data.matrix import UserItemCSR
from distrec.metrics.ranking import full_ranking_metrics
from distrec.models import Victim, create_victim
from distrec.models.graph import LightGCNPropagation, bipartite_edge_index, normalized_adjacency
from distrec.models.indexing import take_rows
from distrec.models.losses import info_nce, sampled_softmax_loss
from distrec.models.wrmf import WRMF, _Buckets, _SparseSide

FAST = {
    "bpr": dict(dim=16, epochs=12, lr=1e-2, batch_size=512, reg=1e-2),
    "lightgcn": dict(dim=16, epochs=12, lr=1e-2, batch_size=512),
    # on this small, dense toy set the contrastive terms at their published weights (0.1, 0.2) overwhelm
    # BPR (see docs/benchmarks.md); the learning check uses a small weight
    "sgl": dict(dim=16, epochs=12, lr=1e-2, batch_size=512, ssl_reg=0.005),
    "simgcl": dict(dim=16, epochs=12, lr=1e-2, batch_size=512, cl_reg=0.005),
    "neumf": dict(dim=8, mlp_layers=[16, 8], epochs=12, lr=5e-3, batch_size=512),
    "wrmf": dict(factors=16, iterations=8, alpha=5.0, reg=0.1),
}


@pytest.mark.parametrize("name", sorted(FAST))
def test_victim_learns_and_round_trips(name, synthetic_dataset, tmp_path):
    ds = synthetic_dataset
    extra = {} if name == "wrmf" else {"backend": "memory"}
    model = create_victim(name, ds.n_users, ds.n_items, seed=0, **FAST[name], **extra)
    untrained_state = {k: v.clone() for k, v in model.state_dict().items()}
    history = model.fit(ds, progress=False)
    assert history[-1]["loss"] < history[0]["loss"]
    model.eval()
    train = UserItemCSR.from_table(ds.table("train"), ds.n_users, ds.n_items)
    test = UserItemCSR.from_table(ds.table("test"), ds.n_users, ds.n_items)
    learned = full_ranking_metrics(model.score, train, test, (20,))["recall@20"]
    untrained = create_victim(name, ds.n_users, ds.n_items, seed=0, **FAST[name], **extra)
    untrained.load_state_dict(untrained_state)
    if hasattr(model, "adj"):
        untrained.adj = model.adj
    untrained.eval()
    assert learned > 1.3 * full_ranking_metrics(untrained.score, train, test, (20,))["recall@20"]
    model.save(tmp_path / name)
    restored = Victim.load(tmp_path / name)
    if hasattr(model, "adj"):
        restored.prepare_fit(ds, torch.device("cpu"))
    restored.eval()
    users = torch.arange(12)
    assert torch.allclose(restored.score(users), model.score(users), atol=1e-6)


def test_the_learning_rate_decays_per_epoch(synthetic_dataset):
    ds = synthetic_dataset
    model = create_victim(
        "bpr", ds.n_users, ds.n_items, dim=8, epochs=3, lr=0.01, lr_decay=0.5, batch_size=256, backend="memory"
    )
    assert [h["lr"] for h in model.fit(ds, progress=False)] == pytest.approx([0.01, 0.005, 0.0025])
    with pytest.raises(ValueError, match=r"bpr: lr_decay: Input should be greater than 0 \(got 0.0\)"):
        create_victim("bpr", ds.n_users, ds.n_items, lr_decay=0.0)


def test_the_cosine_schedule_anneals_to_zero_over_the_epochs(synthetic_dataset):
    ds = synthetic_dataset
    model = create_victim(
        "bpr", ds.n_users, ds.n_items, dim=8, epochs=4, lr=0.01, lr_schedule="cosine", batch_size=256, backend="memory"
    )
    assert [h["lr"] for h in model.fit(ds, progress=False)] == pytest.approx(
        [0.01, 0.01 * (1 + 0.5**0.5) / 2, 0.005, 0.01 * (1 - 0.5**0.5) / 2]
    )
    with pytest.raises(ValueError, match=r"bpr: lr_schedule: Input should be 'exponential' or 'cosine' \(got 'step'\)"):
        create_victim("bpr", ds.n_users, ds.n_items, lr_schedule="step")
    with pytest.raises(ValueError, match="lr_decay=0.9 applies to lr_schedule 'exponential' only"):
        create_victim("bpr", ds.n_users, ds.n_items, lr_schedule="cosine", lr_decay=0.9)
    with pytest.raises(ValueError, match="bpr: sampling: Input should be"):
        create_victim("bpr", ds.n_users, ds.n_items, lr_schedule="cosine", sampling="users")


def test_sgl_without_its_contrastive_term_is_lightgcn(synthetic_dataset):
    ds = synthetic_dataset
    cfg = dict(dim=8, epochs=2, lr=1e-2, batch_size=256, seed=3, backend="memory")
    sgl = create_victim("sgl", ds.n_users, ds.n_items, ssl_reg=0.0, **cfg)
    lightgcn = create_victim("lightgcn", ds.n_users, ds.n_items, **cfg)
    sgl.fit(ds, progress=False)
    lightgcn.fit(ds, progress=False)
    assert torch.allclose(sgl.embedding, lightgcn.embedding, atol=1e-6)
    with_ssl = create_victim("sgl", ds.n_users, ds.n_items, ssl_reg=0.1, **cfg)
    with_ssl.fit(ds, progress=False)
    assert not torch.allclose(with_ssl.embedding, lightgcn.embedding, atol=1e-4)


def test_wrmf_exact_als_never_increases_its_objective(synthetic_dataset):
    ds = synthetic_dataset
    model = create_victim(
        "wrmf", ds.n_users, ds.n_items, factors=8, iterations=6, solver="cholesky", alpha=5.0, reg=0.1
    )
    losses = [h["loss"] for h in model.fit(ds, progress=False)]
    assert all(b <= a * (1 + 1e-6) for a, b in zip(losses, losses[1:]))


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_wrmf_solve_equals_direct_least_squares(solver):
    rng = np.random.default_rng(0)
    n_users, n_items, f, alpha, reg = 6, 9, 4, 3.0, 0.1
    users, items = rng.integers(0, n_users, 20), rng.integers(0, n_items, 20)
    ratings = rng.integers(1, 3, 20).astype(np.float32)
    model = WRMF(n_users, n_items, factors=f, alpha=alpha, reg=reg, cg_steps=2 * f)
    csr = UserItemCSR.from_arrays(users, items, n_users, n_items, ratings)
    side = _Buckets(csr, alpha, 7, "cpu") if solver == "cholesky" else _SparseSide(csr, alpha, "cpu")
    solve = model.solve_cholesky if solver == "cholesky" else model.solve_cg
    Y = torch.randn(n_items, f)
    X = solve(Y, side, torch.zeros(n_users, f))
    for u in range(n_users):
        c, p = np.ones(n_items), np.zeros(n_items)
        s, e = csr.indptr[u], csr.indptr[u + 1]
        c[csr.indices[s:e]] = 1 + alpha * csr.values[s:e]
        p[csr.indices[s:e]] = 1
        # argmin sum_i c_i (p_i - x.y_i)^2 + reg |x|^2, as an ordinary least-squares problem
        a = np.vstack([np.sqrt(c)[:, None] * Y.numpy(), np.sqrt(reg) * np.eye(f)])
        b = np.concatenate([np.sqrt(c) * p, np.zeros(f)])
        assert np.allclose(np.linalg.lstsq(a, b, rcond=None)[0], X[u].numpy(), atol=1e-5)


@pytest.mark.parametrize("rows_max_nnz_share", [1.0, 0.0], ids=["row-submatrix", "full-last-layer"])
def test_lightgcn_propagation_equals_dense_reference(rows_max_nnz_share, monkeypatch):
    users, items, n_users, n_items = np.array([0, 0, 1, 2, 2, 3]), np.array([0, 1, 1, 2, 0, 2]), 4, 3
    n = n_users + n_items
    adj = normalized_adjacency(bipartite_edge_index(users, items, n_users), n)
    dense = torch.zeros(n, n)
    dense[users, items + n_users] = dense[items + n_users, users] = 1
    deg = dense.sum(1)
    norm = dense / torch.sqrt(deg[:, None] * deg[None, :])
    assert torch.allclose(adj.to_dense(), norm)
    x = torch.randn(n, 5, requires_grad=True)
    expected = (x + norm @ x + norm @ norm @ x + norm @ norm @ norm @ x) / 4
    prop = LightGCNPropagation(3)
    monkeypatch.setattr(prop, "rows_max_nnz_share", rows_max_nnz_share)
    assert torch.allclose(prop(x, adj), expected, atol=1e-6)
    nodes = torch.tensor([1, 5, 6])
    rows = prop.rows(x, adj, nodes)
    assert torch.allclose(rows, expected[nodes], atol=1e-6)
    g_rows = torch.autograd.grad(rows.square().sum(), x)[0]
    g_ref = torch.autograd.grad(expected[nodes].square().sum(), x)[0]
    assert torch.allclose(g_rows, g_ref, atol=1e-6)


@pytest.mark.parametrize("shape", [(7,), (3, 4)])
def test_take_rows_is_advanced_indexing_with_its_gradient(shape):
    table = torch.randn(6, 5, requires_grad=True)
    index = torch.randint(0, 6, shape, generator=torch.Generator().manual_seed(0))  # repeats rows
    weight = torch.randn(*shape, 5)
    rows = take_rows(table, index)
    assert rows.shape == (*shape, 5) and torch.equal(rows, table[index])
    (grad,) = torch.autograd.grad((rows * weight).sum(), table)
    (expected,) = torch.autograd.grad((table[index] * weight).sum(), table)
    assert torch.allclose(grad, expected, atol=1e-6)


@pytest.mark.parametrize("name, key", [("simgcl", "cl_nodes"), ("sgl", "ssl_nodes")])
def test_the_contrast_draws_at_most_its_node_budget_from_the_batch(name, key, synthetic_dataset):
    ds = synthetic_dataset
    model = create_victim(name, ds.n_users, ds.n_items, dim=8, **{key: 5})
    gen = torch.Generator().manual_seed(0)
    users, pos = torch.randint(0, ds.n_users, (64,), generator=gen), torch.randint(0, ds.n_items, (64,), generator=gen)
    seen = []

    def view(nodes):
        seen.append(nodes)
        return take_rows(model.embedding, nodes)

    model.view_contrast(users, pos, view, view, 0.5, max_nodes=5)
    drawn_users, drawn_items = seen[0][seen[0] < ds.n_users], seen[0][seen[0] >= ds.n_users] - ds.n_users
    assert len(drawn_users) == len(drawn_items) == 5 and len(torch.unique(seen[0])) == 10
    assert set(drawn_users.tolist()) <= set(users.tolist()) and set(drawn_items.tolist()) <= set(pos.tolist())
    full = model.view_contrast(users, pos, view, view, 0.5)
    assert torch.equal(seen[-1], torch.cat([torch.unique(users), torch.unique(pos) + ds.n_users]))
    assert torch.allclose(model.view_contrast(users, pos, view, view, 0.5, max_nodes=10_000), full)
    budgets = []  # the config key reaches the contrast of a training step
    contrast = model.view_contrast
    model.view_contrast = lambda *args: budgets.append(args[-1]) or contrast(*args)
    model.prepare_fit(ds, torch.device("cpu"))
    model.start_epoch(0)
    model.loss(users, pos, torch.randint(0, ds.n_items, (64,), generator=gen))
    assert budgets == [5]
    with pytest.raises(ValueError, match=f"{name}: {key}: Input should be greater than or equal to 0 \\(got -1\\)"):
        create_victim(name, ds.n_users, ds.n_items, **{key: -1})


def test_info_nce_is_the_cross_entropy_of_cosine_similarities_over_the_temperature():
    z1, z2, t = torch.randn(6, 4), torch.randn(6, 4), 0.2
    cos = torch.tensor([[float(a @ b / (a.norm() * b.norm())) for b in z2] for a in z1]) / t
    expected = -(cos.diag() - cos.exp().sum(1).log()).mean()
    assert torch.allclose(info_nce(z1, z2, t), expected, atol=1e-5)


def test_sampled_softmax_is_the_cross_entropy_of_the_positive_among_its_negatives():
    u, i, j, t = torch.randn(5, 4), torch.randn(5, 4), torch.randn(5, 3, 4), 0.1

    def cos(a, b):
        return float(a @ b / (a.norm() * b.norm())) / t

    expected = np.mean(
        [
            -cos(u[r], i[r]) + np.log(np.exp(cos(u[r], i[r])) + sum(np.exp(cos(u[r], j[r, k])) for k in range(3)))
            for r in range(5)
        ]
    )
    assert float(sampled_softmax_loss(u, i, j, t)) == pytest.approx(expected, rel=1e-5)
    shared = j[:1]  # one set of negatives for every row: the same loss as that set repeated per row
    assert torch.allclose(
        sampled_softmax_loss(u, i, shared, t), sampled_softmax_loss(u, i, shared.expand(5, 3, 4), t), atol=1e-6
    )
    hits = torch.zeros(5, 3, dtype=torch.bool)
    hits[:, 2] = True  # a masked negative is left out of the sum
    assert torch.allclose(sampled_softmax_loss(u, i, j, t, hits), sampled_softmax_loss(u, i, j[:, :2], t), atol=1e-6)


@pytest.mark.parametrize("name", ["bpr", "lightgcn"])
def test_the_pairwise_loss_over_n_negatives_is_the_mean_of_the_one_negative_losses(name, synthetic_dataset):
    ds = synthetic_dataset
    model = create_victim(name, ds.n_users, ds.n_items, dim=8, reg=0.1, num_negatives=4, backend="memory")
    model.prepare_fit(ds, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    users, pos = torch.randint(0, ds.n_users, (32,), generator=gen), torch.randint(0, ds.n_items, (32,), generator=gen)
    neg = torch.randint(0, ds.n_items, (32, 4), generator=gen)
    each = torch.stack([model.loss(users, pos, neg[:, k]) for k in range(4)])
    assert torch.allclose(model.loss(users, pos, neg), each.mean(), atol=1e-6)


@pytest.mark.parametrize("negatives", [{"num_negatives": 8}, {"shared_negatives": 64}])
def test_lightgcn_learns_to_rank_with_the_sampled_softmax(negatives, synthetic_dataset):
    ds = synthetic_dataset
    cfg = dict(dim=16, epochs=12, lr=1e-2, batch_size=512, rec_loss="ssm", ssm_temp=0.2, backend="memory", **negatives)
    model, untrained = (create_victim("lightgcn", ds.n_users, ds.n_items, **cfg) for _ in range(2))
    model.fit(ds, progress=False)
    untrained.attach(ds)
    train, test = (UserItemCSR.from_table(ds.table(s), ds.n_users, ds.n_items) for s in ("train", "test"))
    recall = [full_ranking_metrics(m.eval().score, train, test, (20,))["recall@20"] for m in (model, untrained)]
    assert recall[0] > 1.3 * recall[1]
    with pytest.raises(ValueError, match=r"lightgcn: rec_loss: Input should be 'bpr' or 'ssm' \(got 'softmax'\)"):
        create_victim("lightgcn", ds.n_users, ds.n_items, rec_loss="softmax")
    with pytest.raises(ValueError, match=r"simgcl: ssm_temp: Input should be greater than 0 \(got 0.0\)"):
        create_victim("simgcl", ds.n_users, ds.n_items, rec_loss="ssm", ssm_temp=0.0)
    with pytest.raises(ValueError, match="shared_negatives must be 0, or positive with rec_loss 'ssm'"):
        create_victim("lightgcn", ds.n_users, ds.n_items, shared_negatives=16)
    with pytest.raises(ValueError, match="num_negatives must be 1 for the visual victims"):
        create_victim("vbpr", ds.n_users, ds.n_items, num_negatives=2)


@pytest.mark.parametrize("name", ["lightgcn", "sgl", "simgcl"])
def test_dns_trains_on_the_top_scoring_candidate_that_is_not_a_training_item(name, synthetic_dataset):
    ds = synthetic_dataset
    model = create_victim(name, ds.n_users, ds.n_items, dim=8, dns_candidates=16, backend="memory")
    model.prepare_fit(ds, torch.device("cpu"))
    model.start_epoch(0)
    gen = torch.Generator().manual_seed(0)
    users, pos, neg = (torch.randint(0, n, (64,), generator=gen) for n in (ds.n_users, ds.n_items, ds.n_items))
    model.train()
    state = model._sample_gen.get_state()
    candidates = model.ranking_negatives(neg)
    model._sample_gen.set_state(state)
    picked, u, _, j = model.batch_triples(users, pos, neg)
    train = UserItemCSR.from_table(ds.table("train"), ds.n_users, ds.n_items)
    scores = model.eval().score(users).gather(1, candidates)  # from the full final embeddings, not the batch's rows
    known = torch.from_numpy(
        np.array(
            [
                np.isin(row, train.indices[train.indptr[x] : train.indptr[x + 1]])
                for x, row in zip(users.numpy(), candidates.numpy())
            ]
        )
    )
    assert known[:, 1:].any(), "the toy data should put training items among the candidates"
    expected = candidates.gather(1, scores.masked_fill(known, float("-inf")).argmax(1, keepdim=True))[:, 0]
    assert torch.equal(picked, expected)
    assert torch.allclose(j, model.final_embeddings()[picked + ds.n_users], atol=1e-5)
    assert not torch.equal(picked, neg)


def test_dns_config_errors(synthetic_dataset):
    ds = synthetic_dataset
    with pytest.raises(ValueError, match=r"lightgcn: dns_candidates: Input should be greater than or equal to 0"):
        create_victim("lightgcn", ds.n_users, ds.n_items, dns_candidates=-1)
    with pytest.raises(ValueError, match="needs rec_loss 'bpr' and num_negatives 1"):
        create_victim("lightgcn", ds.n_users, ds.n_items, dns_candidates=8, rec_loss="ssm")
    with pytest.raises(ValueError, match="needs rec_loss 'bpr' and num_negatives 1"):
        create_victim("simgcl", ds.n_users, ds.n_items, dns_candidates=8, num_negatives=4)


def test_ray_data_stream_and_memory_path_train_the_same_model(ray_session, synthetic_dataset):
    ds = synthetic_dataset
    models = {}
    for backend in ("ray", "memory"):
        models[backend] = create_victim(
            "bpr", ds.n_users, ds.n_items, dim=8, epochs=2, batch_size=256, seed=4, backend=backend
        )
        models[backend].fit(ds, progress=False)
    for k, v in models["ray"].state_dict().items():
        assert torch.equal(v, models["memory"].state_dict()[k])


def test_a_loaded_graph_victim_scores_after_attach(synthetic_dataset, tmp_path):
    from distrec.models.base import Victim

    model = create_victim(
        "lightgcn", synthetic_dataset.n_users, synthetic_dataset.n_items, dim=8, layers=2, epochs=1, backend="memory"
    )
    model.fit(synthetic_dataset, progress=False)
    model.eval()
    loaded = Victim.load(model.save(tmp_path / "m"))
    with pytest.raises(RuntimeError, match="has no graph"):
        loaded.score(torch.arange(3))
    assert torch.allclose(loaded.attach(synthetic_dataset).eval().score(torch.arange(3)), model.score(torch.arange(3)))


def test_neumf_branches_and_ncf_pretraining_start_from_the_two_halves(synthetic_dataset):
    from distrec.attacks.weights import WeightAttackConfig, attacked_scores

    ds = synthetic_dataset
    cfg = dict(dim=8, mlp_layers=[16, 8], epochs=1, batch_size=512, backend="memory")
    gmf = create_victim("neumf", ds.n_users, ds.n_items, branch="gmf", **cfg)
    before = gmf.logits(torch.arange(5), torch.arange(5))
    torch.nn.init.normal_(gmf.mlp[0].weight)  # the MLP tower is not part of GMF's score
    assert torch.equal(gmf.logits(torch.arange(5), torch.arange(5)), before)
    assert [n for n, _, _ in gmf.weight_matrices()] == ["user_gmf", "item_gmf", "out"]  # what the weight attack moves
    moved = attacked_scores(gmf, WeightAttackConfig(eps=0.1), torch.arange(3), torch.arange(12).reshape(3, 4))
    assert moved.shape == (3, 4) and not torch.allclose(
        moved, gmf.score_pairs(torch.arange(3), torch.arange(12).reshape(3, 4))
    )
    model = create_victim("neumf", ds.n_users, ds.n_items, pretrain_epochs=1, pretrain_alpha=0.3, **cfg)
    history = model.pretrain(ds, progress=False)
    assert [h["stage"] for h in history] == ["pretrain gmf", "pretrain mlp"]
    halves = {b: create_victim("neumf", ds.n_users, ds.n_items, branch=b, **cfg) for b in ("gmf", "mlp")}
    for half in halves.values():
        half.fit(ds, progress=False)  # the same seed and data: the halves the pre-training fit
    u, i = torch.arange(20), torch.arange(20) % ds.n_items
    with torch.no_grad():
        expected = 0.3 * halves["gmf"].logits(u, i) + 0.7 * halves["mlp"].logits(u, i)
        assert torch.allclose(model.logits(u, i), expected, atol=1e-5)
    with pytest.raises(ValueError, match="pretrain_epochs pre-trains the two branches of NeuMF, not branch 'mlp'"):
        create_victim("neumf", ds.n_users, ds.n_items, branch="mlp", pretrain_epochs=2)
