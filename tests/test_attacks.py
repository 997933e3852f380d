"""Injective attacks: threat model, heuristics, profiles, surrogate gradients, SharpAP, poisoned data."""

import numpy as np
import pyarrow as pa
import pytest
import torch

from distrec.attacks import SharpAP, create_attack
from distrec.attacks.base import AttackContext
from distrec.attacks.budget import (
    Budget,
    ThreatModel,
    popularity_bucket,
    resolve_budget,
    select_targets,
    threat_model,
)
from distrec.attacks.gradient import initial_profiles
from distrec.attacks.objectives import DifficultyDiversityLoss, ScoreBatch, target_cross_entropy, target_score_loss
from distrec.attacks.poisoned import clean_original, fake_profiles, write_poisoned
from distrec.attacks.profiles import check_budget, project_profiles, read_profiles
from distrec.attacks.surrogates import Factors, ItemStep, WRMFSurrogate, wmf_gradients
from distrec.config import ConfigError
from distrec.data.errors import DataFormatError
from distrec.data.matrix import UserItemCSR


def random_csr(n_users=40, n_items=30, density=0.2, seed=0):
    rng = np.random.default_rng(seed)
    r, c = np.nonzero(rng.random((n_users, n_items)) < density)
    return UserItemCSR.from_arrays(r, c, n_users, n_items)


def context(train, n_fake=4, n_filler=8, targets=(3, 7), seed=0, categories=None):
    return AttackContext(train, np.asarray(targets), Budget(n_fake, n_filler), seed, categories, progress=False)


def test_budget_resolves_ratio_and_average_degree():
    # 200 users with degrees 1..4 repeating (mean 2.5 -> 2 by banker's rounding? no: round(2.5) = 2)
    users = np.repeat(np.arange(200), np.tile([1, 2, 3, 4], 50))
    items = np.concatenate([np.arange(d) for d in np.tile([1, 2, 3, 4], 50)])
    train = UserItemCSR.from_arrays(users, items, 200, 10)
    budget = resolve_budget(ThreatModel(fake_ratio=0.05, n_targets=2), train)
    assert budget == Budget(n_fake=10, n_filler=round(2.5))
    assert resolve_budget(ThreatModel(n_fake=3, n_filler=6), train) == Budget(3, 6)
    with pytest.raises(ValueError, match="n_filler \\(1\\) must be at least the number of targets \\(5\\)"):
        resolve_budget(ThreatModel(n_filler=1), train)


def test_targets_come_from_the_bucket_and_are_seeded():
    pop = np.arange(1, 101)  # item i has i + 1 interactions
    users = np.concatenate([np.arange(p) for p in pop])
    items = np.repeat(np.arange(100), pop)
    train = UserItemCSR.from_arrays(users, items, 100, 100)
    tail, head = popularity_bucket(train, "tail"), popularity_bucket(train, "head")
    assert tail.max() < 50 and head.min() >= 95
    a = select_targets(ThreatModel(n_targets=5, target_bucket="tail", seed=1), train)
    b = select_targets(ThreatModel(n_targets=5, target_bucket="tail", seed=1), train)
    assert np.array_equal(a, b) and set(a) <= set(tail) and len(set(a)) == 5
    assert not np.array_equal(a, select_targets(ThreatModel(n_targets=5, target_bucket="tail", seed=2), train))
    assert select_targets(ThreatModel(target_items=[4, 2]), train).tolist() == [4, 2]
    with pytest.raises(ValueError, match="not item ids"):
        select_targets(ThreatModel(target_items=[100]), train)


def test_projection_keeps_targets_and_top_fillers():
    values = torch.tensor([[0.9, 0.1, 0.8, 0.2, 0.7], [0.0, 0.5, 0.4, 0.3, 0.6]])
    out = project_profiles(values, np.array([1]), 3)
    assert out.tolist() == [[1, 1, 1, 0, 0], [0, 1, 0, 0, 1]][:1] + [[0, 1, 1, 0, 1]]


@pytest.mark.parametrize("name", ["random", "popular", "bandwagon", "segment"])
def test_heuristics_respect_the_budget_and_are_seeded(name):
    train = random_csr()
    cats = [[i % 3] for i in range(30)]
    ctx = context(train, categories=cats)
    fake = create_attack(name).craft(ctx)
    check_budget(fake, ctx.budget, ctx.targets)
    assert fake.shape == (4, 30) and (fake.sum(1) == 8).all()
    assert torch.equal(fake, create_attack(name).craft(context(train, categories=cats)))
    assert not torch.equal(fake, create_attack(name).craft(context(train, seed=1, categories=cats)))


def test_bandwagon_and_segment_draw_from_their_pools():
    train = random_csr(n_items=60, density=0.3)
    pop = np.bincount(train.indices, minlength=60)
    top = set(np.argsort(-pop, kind="stable")[:6].tolist()) - {3, 7}
    fake = create_attack("bandwagon", popular_share=1.0, top_fraction=0.1).craft(context(train, n_filler=6))
    fillers = {int(i) for i in torch.nonzero(fake[0]).flatten()} - {3, 7}
    assert fillers <= top and len(fillers) == 4
    ctx = context(train, n_filler=12)  # 10 filler slots, 5 of them popular
    order = [i for i in np.argsort(-pop, kind="stable").tolist() if i not in (3, 7)]
    exact = create_attack("bandwagon", popular_share=0.5, top_fraction=0.2, popular="exact").craft(ctx)
    assert bool(exact[:, order[:5]].all()) and int(exact[:, order[5:12]].sum()) < 5 * len(exact)
    sampled = create_attack("bandwagon", popular_share=0.5, top_fraction=0.2).craft(ctx)
    assert not bool(sampled[:, order[:5]].all())  # the default draws the popular slots from the top 20%
    cats = [[0] if i % 4 == 3 else [1] for i in range(60)]  # targets 3, 7 are in category 0
    fake = create_attack("segment").craft(context(train, categories=cats))
    assert all(cats[int(i)] == [0] for i in torch.nonzero(fake.sum(0)).flatten())
    with pytest.raises(ValueError, match="no item categories"):
        create_attack("segment").craft(context(train))


def test_check_budget_rejects_violations():
    budget, targets = Budget(2, 3), np.array([0])
    check_budget(torch.tensor([[1.0, 1, 0, 0], [1, 0, 0, 1]]), budget, targets)
    with pytest.raises(ValueError, match="exceed the budget n_fake=2"):
        check_budget(torch.ones(3, 4) * torch.tensor([1.0, 0, 0, 0]), budget, targets)
    with pytest.raises(ValueError, match="over the budget n_filler=3"):
        check_budget(torch.tensor([[1.0, 1, 1, 1]]), budget, targets)
    with pytest.raises(ValueError, match="every target"):
        check_budget(torch.tensor([[0.0, 1, 1, 0]]), budget, targets)
    with pytest.raises(ValueError, match="binary"):
        check_budget(torch.tensor([[1.0, 0.5, 0, 0]]), budget, targets)
    with pytest.raises(ValueError, match="revadv: rho: unknown key; valid keys: "):
        create_attack("revadv", rho=0.1)


def dense_item_step(real: np.ndarray, fake: torch.Tensor, p: torch.Tensor, alpha: float, reg: float) -> torch.Tensor:
    """Reference: q_v = (P^T C_v P + reg I)^-1 P^T C_v x_v, per item, dense, float64."""
    x = torch.cat([torch.as_tensor(real, dtype=torch.float64), fake])
    eye = reg * torch.eye(p.shape[1], dtype=torch.float64)
    qs = []
    for v in range(x.shape[1]):
        c = 1 + alpha * x[:, v]
        qs.append(torch.linalg.solve(p.T @ (c[:, None] * p) + eye, p.T @ (c * x[:, v])))
    return torch.stack(qs)


def test_item_step_and_its_closed_form_gradient_equal_a_dense_reference():
    rng = np.random.default_rng(0)
    real = rng.random((30, 20)) < 0.3
    r, c = np.nonzero(real)
    sur = WRMFSurrogate(UserItemCSR.from_arrays(r, c, 30, 20), 4, factors=5, alpha=3.0, reg=0.1, solve_steps=100)
    fake = torch.as_tensor(rng.random((4, 20)) < 0.4, dtype=torch.float32)
    p_real, p_fake, w = torch.randn(30, 5), torch.randn(4, 5), torch.randn(20, 5)
    x, pf = fake.clone().requires_grad_(), p_fake.clone().requires_grad_()
    q = ItemStep.apply(x, p_real, pf, torch.zeros(20, 5), sur)
    (q * w).sum().backward()
    xd, pfd = fake.double().requires_grad_(), p_fake.double().requires_grad_()
    qd = dense_item_step(real, xd, torch.cat([p_real.double(), pfd]), 3.0, 0.1)
    (qd * w.double()).sum().backward()
    assert torch.allclose(q, qd.float(), atol=1e-4)
    assert torch.allclose(x.grad, xd.grad.float(), atol=1e-4) and x.grad.abs().max() > 1e-2
    assert torch.allclose(pf.grad, pfd.grad.float(), atol=1e-4)


def test_unrolled_surrogate_gradients():
    torch.manual_seed(0)
    p, q = torch.randn(12, 3, requires_grad=True), torch.randn(9, 3, requires_grad=True)
    data = (torch.rand(12, 9) < 0.3).float()
    loss = ((1 + 4.0 * data) * (p @ q.T - data) ** 2).sum() + 0.2 * (p.pow(2).sum() + q.pow(2).sum())
    gp, gq = torch.autograd.grad(loss, [p, q])
    ap, aq = wmf_gradients(p, q, data, 4.0, 0.2)
    assert torch.allclose(gp, ap, atol=1e-5) and torch.allclose(gq, aq, atol=1e-5)


def relaxed_attack_loss(
    sur: WRMFSurrogate, fake: torch.Tensor, targets: np.ndarray, train: UserItemCSR
) -> torch.Tensor:
    f = sur.fit(fake)
    r, c = train.rows(np.arange(train.n_users))
    batch = ScoreBatch(f.users @ f.items.T, torch.as_tensor(r), torch.as_tensor(c), torch.as_tensor(targets))
    return target_cross_entropy(batch)


@pytest.mark.parametrize("gradient", ["als", "unroll"])
def test_poison_gradient_is_a_descent_direction(gradient):
    """A small step against the poison gradient on the relaxed (continuous) fake data lowers the attack
    loss of a surrogate retrained from scratch; a step along it raises it."""
    train = random_csr(60, 40, 0.15, seed=3)
    targets = np.array([5, 11])
    cfg = dict(factors=4, alpha=5.0, reg=0.1, epochs=40, unroll_steps=10, lr=0.05, iterations=8, gradient=gradient)
    sur = WRMFSurrogate(train, 6, **cfg)
    fake = initial_profiles(context(train, n_fake=6, n_filler=10, targets=targets))
    x = fake.clone().requires_grad_()
    relaxed_attack_loss(sur, x, targets, train).backward()
    step = 0.05 * x.grad / x.grad.abs().max()
    base = float(relaxed_attack_loss(sur, fake, targets, train))
    assert (
        float(relaxed_attack_loss(sur, fake - step, targets, train))
        < base
        < float(relaxed_attack_loss(sur, fake + step, targets, train))
    )


@pytest.fixture(scope="module")
def small_ctx():
    train = random_csr(80, 50, 0.15, seed=5)
    return train, context(train, n_fake=5, n_filler=8, targets=(4, 9))


def test_sharpap_with_rho_zero_is_exactly_the_wrapped_attack(small_ctx):
    train, ctx = small_ctx
    sur = WRMFSurrogate(train, 5, factors=4, iterations=5)
    plain = create_attack("revadv", outer_steps=3, lr=5.0)
    wrapped = SharpAP(create_attack("revadv", outer_steps=3, lr=5.0), rho=0.0)
    a, b = plain.craft(ctx, sur), wrapped.craft(ctx, sur)
    assert torch.equal(a, b)
    assert [h["attack_loss"] for h in plain.history] == [h["attack_loss"] for h in wrapped.history]
    assert any(h.get("changed", 0) > 0 for h in plain.history)  # the attack did move


def test_sharpap_perturbs_within_rho_and_respects_the_rec_constraint(small_ctx):
    train, ctx = small_ctx
    sur = WRMFSurrogate(train, 5, factors=4, iterations=5)
    attack = create_attack("revadv", outer_steps=0)
    fake = initial_profiles(ctx)
    g_plain, rec_plain = attack.poison_gradient(fake, ctx, sur)
    free = SharpAP(attack, rho=0.05, rec_tolerance=None)
    g_sharp, rec = attack.poison_gradient(fake, ctx, sur, free.worst_case)
    params = sur.fit(fake)
    norm = float(torch.sqrt(params.users.pow(2).sum() + params.items.pow(2).sum()))
    assert rec["rho_effective"] == pytest.approx(0.05 * norm, rel=1e-4) and rec["halvings"] == 0
    assert rec["worst_case_loss"] > rec["attack_loss"]  # the ascent step found a worse surrogate for the attacker
    assert not torch.allclose(g_plain, g_sharp)
    bounded = SharpAP(attack, rho=0.5, rec_tolerance=0.01)
    _, rec = attack.poison_gradient(fake, ctx, sur, bounded.worst_case)
    assert rec["halvings"] > 0 and 0.0 <= rec["rec_loss_rise"] <= 0.01  # the constraint sets the radius
    strict = SharpAP(attack, rho=0.05, rec_tolerance=0.0, max_halvings=3)
    _, rec = attack.poison_gradient(fake, ctx, sur, strict.worst_case)
    assert rec["halvings"] == 3 and rec["rho_effective"] == pytest.approx(0.05 * norm / 8, rel=1e-4)


def test_dada_weights_reach_and_diversity():
    # one user, items 0..5; targets 0 (just below the top-2 boundary) and 1 (far below)
    scores = torch.tensor([[1.9, -3.0, 2.0, 2.5, 0.0, 0.1]], requires_grad=True)
    batch = ScoreBatch(
        scores, torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long), torch.tensor([0, 1])
    )
    DifficultyDiversityLoss(k=2, beta=0.5, gamma=0.5)(batch).backward()
    g = scores.grad[0]
    assert g[0] < 0 and g[1] < 0 and abs(g[0]) > 20 * abs(g[1])  # the reachable target gets the push
    # a user the targets already reach weighs less than one they do not
    hit = torch.tensor([[3.0, -3.0, 2.0, 2.5, 0.0, 0.1]])
    loss = DifficultyDiversityLoss(k=2)
    empty = torch.tensor([], dtype=torch.long)
    w_hit = loss(ScoreBatch(hit, empty, empty, torch.tensor([1])))
    w_miss = loss(ScoreBatch(scores.detach(), empty, empty, torch.tensor([1])))
    assert w_hit < w_miss


def test_poisoned_dataset_round_trip(synthetic_dataset, tmp_path):
    fake = torch.zeros(3, synthetic_dataset.n_items)
    fake[:, [1, 2]] = 1.0
    fake[0, 5] = 1.0
    poisoned = write_poisoned(synthetic_dataset, fake, tmp_path / "p", {"attack": "test", "targets": [1, 2]})
    train = poisoned.table("train")
    fake_rows = train.filter(train.column("is_fake"))
    n = synthetic_dataset.n_users
    assert poisoned.n_users == n + 3 and poisoned.metadata["n_real_users"] == n
    assert sorted(zip(fake_rows.column("user_id").to_pylist(), fake_rows.column("item_id").to_pylist())) == [
        (n, 1),
        (n, 2),
        (n, 5),
        (n + 1, 1),
        (n + 1, 2),
        (n + 2, 1),
        (n + 2, 2),
    ]
    assert train.num_rows == synthetic_dataset.table("train").num_rows + 7
    assert poisoned.table("user_map").column("original").to_pylist()[-3:] == [-1, -2, -3]
    assert poisoned.info()["fake_users"] == 3 and poisoned.metadata["attack"]["attack"] == "test"
    clean = clean_original(poisoned, tmp_path / "c")
    assert clean.table("train").equals(synthetic_dataset.table("train")) and clean.n_users == n
    assert clean.table("user_map").equals(synthetic_dataset.table("user_map"))
    assert all(clean.table(t).equals(synthetic_dataset.table(t)) for t in synthetic_dataset.metadata["tables"])
    assert "attack" not in clean.metadata and "n_real_users" not in clean.metadata
    rows, items = fake_profiles(poisoned)
    assert sorted(zip(rows.tolist(), items.tolist())) == [(0, 1), (0, 2), (0, 5), (1, 1), (1, 2), (2, 1), (2, 2)]
    with pytest.raises(ValueError, match="not a poisoned dataset"):
        clean_original(synthetic_dataset, tmp_path / "cc")
    with pytest.raises(ValueError, match="already holds fake users"):
        write_poisoned(poisoned, fake, tmp_path / "pp", {})


def test_read_profiles_maps_original_ids_and_locates_errors(tmp_path):
    item_map = pa.table({"original": pa.array([10, 20, 30], pa.int64()), "internal": pa.array([0, 1, 2], pa.int64())})
    path = tmp_path / "fake.txt"
    path.write_text("10 30\n# comment\n20,10\n")
    assert [p.tolist() for p in read_profiles(path, item_map)] == [[0, 2], [0, 1]]
    path.write_text("10 30\n20  99\n")
    with pytest.raises(DataFormatError, match=f"{path}:2:5: item '99' is not in the dataset's item map"):
        read_profiles(path, item_map)


@pytest.mark.parametrize("name", ["bpr", "lightgcn"])
def test_cross_architecture_poison_gradient_is_a_descent_direction(name):
    """The unrolled MF-BPR and LightGCN surrogates: a step against the poison gradient lowers the attack
    loss of the surrogate retrained from scratch on the stepped data; a step along it raises it."""
    from distrec.attacks.surrogate_registry import create_surrogate

    train = random_csr(60, 40, 0.15, seed=3)
    targets = np.array([5, 11])
    sur = create_surrogate(name, train, 6, dim=8, steps=60, unroll_steps=20, batch_size=256, lr=0.05, fake_negatives=8)
    fake = initial_profiles(context(train, n_fake=6, n_filler=10, targets=targets))
    x = fake.clone().requires_grad_()
    relaxed_attack_loss(sur, x, targets, train).backward()
    assert x.grad.abs().sum() > 0 and torch.isfinite(x.grad).all()
    step = 0.05 * x.grad / x.grad.abs().max()
    base = float(relaxed_attack_loss(sur, fake, targets, train))
    assert (
        float(relaxed_attack_loss(sur, fake - step, targets, train))
        < base
        < float(relaxed_attack_loss(sur, fake + step, targets, train))
    )
    again = sur.fit(fake)
    assert torch.equal(again.items, sur.fit(fake).items)  # the same data and seed retrain the same surrogate
    if name == "lightgcn":
        with pytest.raises(ValueError, match="6 fake users x 40 items = 240 fake edges > max_fake_edges=100"):
            create_surrogate(name, train, 6, max_fake_edges=100)


def test_attacker_view_keeps_a_share_and_moves_some_interactions():
    from distrec.attacks.budget import attacker_view

    train = random_csr(200, 60, 0.2, seed=4)
    assert attacker_view(train, ThreatModel()) is train
    view = attacker_view(train, ThreatModel(knowledge=0.5, seed=1))
    true = set(zip(*train.rows(np.arange(200))))
    held = set(zip(*view.rows(np.arange(200))))
    assert held <= true and 0.4 < len(held) / len(true) < 0.6
    noisy = set(
        zip(*attacker_view(train, ThreatModel(knowledge=0.5, knowledge_noise=0.5, seed=1)).rows(np.arange(200)))
    )
    assert 0.3 < len(noisy - true) / len(noisy) < 0.6  # about half moved, a few onto held items
    with pytest.raises(ConfigError, match=r"^threat: knowledge: Input should be greater than 0 \(got 0\)"):
        threat_model({"knowledge": 0})


def test_rapu_posterior_trusts_explained_interactions_and_weights_users_by_it():
    from distrec.attacks.rapu import genuine_posterior

    residuals = torch.tensor([0.0, 0.05, 0.1, 0.95, 1.0])
    post, pi = genuine_posterior(residuals, sigma=0.2, b=0.2, prior=0.5, steps=20)
    assert post[:3].min() > 0.9 and post[3:].max() < 0.1 and pi == pytest.approx(0.6, abs=0.05)
    train = random_csr(30, 20, 0.3, seed=2)
    attack = create_attack("rapu", sigma=0.2, b=0.2)
    users, items = torch.zeros(30, 2), torch.zeros(20, 2)
    users[:15, 0], items[:, 0] = 1.0, 1.0  # users 0-14 score 1 on every item: their interactions are explained
    w = attack.user_weights(Factors(users, items), context(train))
    assert w.mean() == pytest.approx(1.0) and w[:15].min() > 1.5 and w[15:].max() < 0.5


def test_rapu_projection_leans_to_popular_fillers_and_keeps_the_budget():
    train = random_csr(80, 50, 0.15, seed=5)
    ctx = context(train, n_fake=5, n_filler=8, targets=(4, 9))
    flat = torch.zeros(5, 50)
    out = create_attack("rapu", popularity_smooth=1.0).project(flat, ctx)
    pop = ctx.popularity()
    chosen = out[0].numpy().astype(bool)
    chosen[[4, 9]] = False
    rest = ~out[0].numpy().astype(bool)
    assert (
        (out.sum(1) == 8).all() and bool(out[:, [4, 9]].all()) and pop[chosen].min() >= pop[rest].max()
    )  # the most popular fillers
    sur = WRMFSurrogate(train, 5, factors=4, iterations=5)
    fake = SharpAP(create_attack("rapu", outer_steps=2, lr=5.0), rho=0.05).craft(ctx, sur)
    check_budget(fake, ctx.budget, ctx.targets)


def test_pga_steps_in_the_box_and_fills_profiles_only_at_the_end(small_ctx):
    """PGA keeps continuous ratings in [0, rating_max] (targets at the top) while it steps, and only its result is
    projected onto the budget; its objective falls when a target's score rises."""
    train, ctx = small_ctx
    sur = WRMFSurrogate(train, 5, factors=4, iterations=5)
    attack = create_attack("pga", outer_steps=4, lr=0.5)
    iterates = []
    step = attack.project
    attack.project = lambda values, c: iterates.append(step(values, c)) or iterates[-1]
    fake = attack.craft(ctx, sur)
    check_budget(fake, ctx.budget, ctx.targets)
    assert iterates and all(float(x.min()) >= 0 and float(x.max()) <= 1 for x in iterates)
    assert any(((x > 0) & (x < 1)).any() for x in iterates)  # continuous between steps, not a 0/1 profile
    assert all(bool((x[:, torch.as_tensor(ctx.targets)] == 1).all()) for x in iterates)
    assert len(attack.history) == 5 and all("surrogate_t_hr@50" in h for h in attack.history)
    wrapped = SharpAP(create_attack("pga", outer_steps=1), rho=0.05)
    check_budget(wrapped.craft(ctx, sur), ctx.budget, ctx.targets)
    scores = torch.zeros(2, 6, requires_grad=True)
    batch = ScoreBatch(scores, torch.tensor([0]), torch.tensor([3]), torch.tensor([3, 4]))
    target_score_loss(batch).backward()
    assert scores.grad.tolist() == [[0, 0, 0, 0, -1, 0], [0, 0, 0, -1, -1, 0]]  # user 0 already has target 3
