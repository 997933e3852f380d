"""Every key a config accepts takes effect: per registry (surrogates, victims, injective attacks), each
documented key changed alone changes the result, or is shown (or said, with the reason) to change none."""

import dataclasses

import numpy as np
import pytest
import torch


def test_the_surrogate_seed_changes_the_poison_gradient():
    from distrec.attacks import create_attack
    from distrec.attacks.base import AttackContext
    from distrec.attacks.budget import Budget
    from distrec.attacks.gradient import initial_profiles
    from distrec.attacks.surrogate_registry import create_surrogate
    from distrec.data.matrix import UserItemCSR

    rng = np.random.default_rng(0)
    train = UserItemCSR.from_arrays(rng.integers(0, 60, 600), rng.integers(0, 40, 600), 60, 40)
    ctx = AttackContext(train, np.array([3, 5]), Budget(n_fake=3, n_filler=5), seed=0, progress=False)
    attack = create_attack("revadv", outer_steps=1, select_k=10)
    fake = initial_profiles(ctx)

    def grad(seed):
        surrogate = create_surrogate("wrmf", train, 3, "cpu", factors=4, iterations=2, seed=seed)
        return attack.poison_gradient(fake, ctx, surrogate)[0]

    assert torch.equal(grad(7), grad(7))
    assert not torch.allclose(grad(0), grad(7))  # the context's seed (0) no longer overrides the surrogate's


SURROGATE_BASE = {
    "wrmf": {"factors": 4, "iterations": 2, "cg_steps": 2, "solve_steps": 3, "epochs": 3, "unroll_steps": 2},
    "bpr": {"dim": 4, "steps": 6, "unroll_steps": 2, "batch_size": 64, "fake_negatives": 2, "rec_pairs": 128},
    "lightgcn": {
        "dim": 4,
        "steps": 6,
        "unroll_steps": 2,
        "batch_size": 64,
        "fake_negatives": 2,
        "rec_pairs": 128,
        "layers": 1,
    },
}
# key -> (new value, the gradient mode it belongs to); keys that change no result, with why
SURROGATE_CHANGES = {
    "wrmf": {
        "factors": 5,
        "alpha": 3.0,
        "reg": 0.5,
        "gradient": "unroll",
        "iterations": 3,
        "cg_steps": 1,
        "solve_steps": 1,
        "seed": 7,
        ("unroll", "epochs"): 5,
        ("unroll", "unroll_steps"): 1,
        ("unroll", "lr"): 0.2,
    },
    "bpr": {
        "dim": 5,
        "steps": 9,
        "unroll_steps": 1,
        "batch_size": 32,
        "lr": 0.05,
        "reg": 0.1,
        "fake_negatives": 3,
        "rec_pairs": 64,
        "seed": 7,
    },
    "lightgcn": {
        "dim": 5,
        "steps": 9,
        "unroll_steps": 1,
        "batch_size": 32,
        "lr": 0.05,
        "reg": 0.1,
        "fake_negatives": 3,
        "rec_pairs": 64,
        "seed": 7,
        "layers": 2,
    },
}
NO_EFFECT = {
    "device": "where it runs, not what it computes",
    "max_dense_entries": "a memory guard: an error above it, no other effect",
    "max_fake_edges": "a memory guard: an error above it, no other effect",
}


@pytest.mark.parametrize("name", sorted(SURROGATE_CHANGES))
def test_every_surrogate_key_changes_the_poison_gradient(name):
    """The surrogate registry: each documented key (or a reason it changes nothing) and its effect on
    d L_atk / d X, the quantity every gradient attack follows."""

    from distrec.attacks import create_attack
    from distrec.attacks.base import AttackContext
    from distrec.attacks.budget import Budget
    from distrec.attacks.gradient import initial_profiles
    from distrec.attacks.surrogate_registry import create_surrogate, surrogate_class
    from distrec.attacks.surrogates import Factors
    from distrec.data.matrix import UserItemCSR

    rng = np.random.default_rng(0)
    train = UserItemCSR.from_arrays(rng.integers(0, 60, 700), rng.integers(0, 50, 700), 60, 50)
    ctx = AttackContext(train, np.array([3, 5]), Budget(n_fake=3, n_filler=5), seed=0, progress=False)
    attack, fake = create_attack("revadv", outer_steps=1, select_k=10), initial_profiles(ctx)

    def grad(config):
        torch.manual_seed(0)
        return attack.poison_gradient(fake, ctx, create_surrogate(name, train, 3, "cpu", **config))[0]

    keys = {f.name for f in dataclasses.fields(surrogate_class(name).Config)}
    tested = {k[1] if isinstance(k, tuple) else k for k in SURROGATE_CHANGES[name]}
    assert keys == tested | (keys & set(NO_EFFECT)), f"keys without a test: {sorted(keys - tested - set(NO_EFFECT))}"

    def rec_loss(config):  # what SharpAP's adaptive radius measures (on a sample of rec_pairs real pairs)
        factors = Factors(torch.ones(60, 4), torch.linspace(-1, 1, 200).reshape(50, 4))
        return create_surrogate(name, train, 3, "cpu", **config).rec_loss(factors).reshape(1)

    for key, value in SURROGATE_CHANGES[name].items():
        mode, key = key if isinstance(key, tuple) else (None, key)
        base = dict(SURROGATE_BASE[name], **({"gradient": mode} if mode else {}))
        measure = rec_loss if key == "rec_pairs" else grad
        assert not torch.allclose(measure(base), measure(dict(base, **{key: value}))), (
            f"{name}.{key}={value!r} changes nothing"
        )


VICTIM_BASE = {
    "wrmf": {"factors": 8, "iterations": 2},
    "bpr": {"dim": 8, "epochs": 2, "lr": 0.01, "batch_size": 512, "backend": "memory"},
    "lightgcn": {"dim": 8, "layers": 1, "epochs": 2, "lr": 0.01, "batch_size": 512, "backend": "memory"},
    "sgl": {"dim": 8, "layers": 1, "epochs": 2, "lr": 0.01, "batch_size": 512, "backend": "memory"},
    "simgcl": {"dim": 8, "layers": 1, "epochs": 2, "lr": 0.01, "batch_size": 512, "backend": "memory"},
    "neumf": {"dim": 4, "mlp_layers": [8, 4], "epochs": 2, "lr": 0.01, "batch_size": 512, "backend": "memory"},
    "deepcf": {"proj_dim": 8, "tower": [8, 4], "epochs": 2, "lr": 0.01, "batch_size": 512, "backend": "memory"},
}
TRAINER_CHANGES = {
    "epochs": 3,
    "lr": 0.02,
    "lr_schedule": "cosine",
    "lr_decay": 0.5,
    "batch_size": 256,
    "num_negatives": 2,
    "seed": 1,
    "sampling": "user",
}
VICTIM_CHANGES = {
    "wrmf": {"factors": 9, "iterations": 3, "alpha": 5.0, "reg": 0.1, "solver": "cholesky", "cg_steps": 1, "seed": 1},
    "bpr": {"dim": 9, "reg": 0.01},
    "lightgcn": {
        "dim": 9,
        "layers": 2,
        "reg": 0.01,
        "rec_loss": "ssm",
        ("ssm", "ssm_temp"): 0.5,
        ("ssm", "shared_negatives"): 16,
        "dns_candidates": 4,
    },
    "neumf": {
        "dim": 5,
        "mlp_layers": [8, 2],
        "reg": 0.01,
        "branch": "gmf",
        "pretrain_epochs": 1,
        "pretrain_alpha": 0.2,
    },
    "deepcf": {"proj_dim": 9, "tower": [8, 2]},
}
VICTIM_CHANGES["sgl"] = dict(
    VICTIM_CHANGES["lightgcn"], aug="nd", ssl_ratio=0.3, ssl_temp=0.5, ssl_reg=0.3, ssl_nodes=50
)
VICTIM_CHANGES["simgcl"] = dict(VICTIM_CHANGES["lightgcn"], eps=0.3, cl_temp=0.5, cl_reg=0.5, cl_nodes=50)
# keys that by design change no score, each checked to change none (backend and device are checked elsewhere:
# tests/test_streaming.py gives identical batches through Ray Data, and no second device is here)
VICTIM_NO_EFFECT = {"eval_every": 1, "patience": 1, "score_chunk_items": 7, "bucket_entries": 64}
VICTIM_UNCHECKED = {"backend", "device"}


@pytest.mark.parametrize("name", sorted(VICTIM_BASE))
def test_every_victim_key_changes_the_trained_scores_or_is_shown_to_change_none(name, synthetic_dataset):
    """The victim registry: every documented key of a victim trained without a validation split."""

    from distrec.models import create_victim
    from distrec.models.registry import victim_class

    users = torch.arange(40)

    def scores(config):
        model = create_victim(name, synthetic_dataset.n_users, synthetic_dataset.n_items, **config)
        model.fit(synthetic_dataset, progress=False)
        return model.eval().score(users).detach()

    changes = {
        **{
            k: v
            for k, v in TRAINER_CHANGES.items()
            if k in {f.name for f in dataclasses.fields(victim_class(name).Config)}
        },
        **VICTIM_CHANGES[name],
    }
    keys = {f.name for f in dataclasses.fields(victim_class(name).Config)}
    covered = {k[1] if isinstance(k, tuple) else k for k in changes} | set(VICTIM_NO_EFFECT) | VICTIM_UNCHECKED
    assert keys <= covered, f"{name}: keys without a test: {sorted(keys - covered)}"
    base = VICTIM_BASE[name]
    reference = scores(base)
    for key, value in changes.items():
        mode, key = key if isinstance(key, tuple) else (None, key)
        if mode is not None:
            config = dict(base, rec_loss=mode)
            assert not torch.allclose(scores(config), scores(dict(config, **{key: value}))), (
                f"{name}.{key}={value!r} (rec_loss {mode}) changes nothing"
            )
        elif key == "pretrain_alpha":  # the weight of the pre-trained halves: with pre-training on
            pretrained = dict(base, pretrain_epochs=1)
            assert not torch.allclose(scores(pretrained), scores(dict(pretrained, **{key: value}))), (
                f"{name}.{key} changes nothing"
            )
        elif key == "dns_candidates":
            assert not torch.allclose(reference, scores(dict(base, num_negatives=1, **{key: value}))), (
                f"{name}.{key} changes nothing"
            )
        else:
            assert not torch.allclose(reference, scores(dict(base, **{key: value}))), (
                f"{name}.{key}={value!r} changes nothing"
            )
    for key, value in VICTIM_NO_EFFECT.items():
        if key in keys:
            assert torch.allclose(reference, scores(dict(base, **{key: value})), atol=1e-5), (
                f"{name}.{key}={value!r} changes the scores"
            )


ATTACK_BASE = {
    "revadv": {"outer_steps": 2},
    "dada": {"outer_steps": 2},
    "rapu": {"outer_steps": 3, "em_steps": 2, "lr": 3.0, "popularity_smooth": 0.1},
    "pga": {"outer_steps": 2},
}
ATTACK_CHANGES = {
    "bandwagon": {"popular_share": 0.2, "top_fraction": 0.3, "popular": "exact"},
    "pga": {"outer_steps": 3, "lr": 5.0, "momentum": 0.5, "select_k": 5, "rating_max": 0.5},
    "segment": {"segment_share": 0.3},
    "revadv": {"outer_steps": 3, "lr": 5.0, "momentum": 0.0, "select_k": 5},
    "dada": {"outer_steps": 3, "lr": 5.0, "momentum": 0.0, "select_k": 5, "k": 3, "beta": 5.0, "gamma": 0.95},
    "rapu": {
        "outer_steps": 4,
        "lr": 5.0,
        "momentum": 0.0,
        "select_k": 5,
        "sigma": 0.05,
        "b": 0.95,
        "prior": 0.3,
        "em_steps": 4,
        "popularity_smooth": 20.0,
    },
}
ATTACK_NO_EFFECT = {"chunk_users": 7}  # the objective summed over chunks of real users: the same profiles


@pytest.mark.parametrize("name", sorted(ATTACK_CHANGES))
def test_every_attack_key_changes_the_fake_profiles_or_is_shown_to_change_none(name, synthetic_dataset):
    """The attack registry (injective attacks with keys): each key changes the crafted profiles or the
    path that led to them."""

    from distrec.attacks import attack_class, create_attack
    from distrec.attacks.base import AttackContext
    from distrec.attacks.budget import Budget
    from distrec.attacks.surrogate_registry import create_surrogate
    from distrec.data.matrix import UserItemCSR

    train = UserItemCSR.from_table(
        synthetic_dataset.table("train"), synthetic_dataset.n_users, synthetic_dataset.n_items
    )
    ctx = AttackContext(
        train,
        np.array([5, 40]),
        Budget(n_fake=6, n_filler=12),
        seed=0,
        item_categories=synthetic_dataset.item_categories(),
        progress=False,
    )

    def profiles(config):
        """The crafted profiles and, for a gradient attack, its loss at every outer step (the profiles
        it returns are the best step's by the surrogate, which a key may leave the same)."""
        surrogate = (
            create_surrogate("wrmf", train, 6, "cpu", factors=8, iterations=2)
            if attack_class(name).uses_surrogate
            else None
        )
        attack = create_attack(name, **config)
        fake = attack.craft(ctx, surrogate).float().ravel()
        return torch.cat([fake, torch.tensor([r["attack_loss"] for r in getattr(attack, "history", [])])])

    keys = {f.name for f in dataclasses.fields(attack_class(name).Config)}
    assert keys <= set(ATTACK_CHANGES[name]) | set(ATTACK_NO_EFFECT), (
        f"{name}: keys without a test: {sorted(keys - set(ATTACK_CHANGES[name]) - set(ATTACK_NO_EFFECT))}"
    )
    base = ATTACK_BASE.get(name, {})
    reference = profiles(base)
    for key, value in ATTACK_CHANGES[name].items():
        assert not torch.equal(reference, profiles(dict(base, **{key: value}))), (
            f"{name}.{key}={value!r} changes nothing"
        )
    for key, value in ATTACK_NO_EFFECT.items():
        if key in keys:
            assert torch.allclose(reference, profiles(dict(base, **{key: value})), rtol=1e-4), (
                f"{name}.{key}={value!r} changes the profiles"
            )


DATA_DEFENSE_CHANGES = {
    "pca": {"fpr": 0.2, "components": 5},
    "profile_classifier": {"fpr": 0.2, "planted": ["random"], "sizes": [0.05], "n_targets": 3, "neighbours": 3},
    "fap": {"fpr": 0.2, "planted": ["random"], "sizes": [0.05], "n_targets": 3, "iterations": 2, "damping": 0.5},
    "spectral": {"fpr": 0.2},
}


def _screening_data():
    from distrec.data.dataset import InMemoryDataset, prepare
    from distrec.data.preprocess import PrepareConfig
    from distrec.data.synthetic import make_synthetic

    raw = make_synthetic(n_users=200, n_items=100, zipf_exponent=1.2, avg_degree=15, n_clusters=4, image_size=0, seed=3)
    tables, meta = prepare(raw, PrepareConfig(seed=3), "synthetic")
    return InMemoryDataset(tables, meta)


@pytest.mark.parametrize("name", sorted(DATA_DEFENSE_CHANGES))
def test_every_key_of_every_detector_changes_what_it_removes_or_scores(name):
    from distrec.defenses import create_defense, defense_class
    from distrec.models.registry import create_victim

    data = _screening_data()

    def fit(d):
        model = create_victim("wrmf", d.n_users, d.n_items, factors=4, iterations=2)
        model.fit(d, progress=False)
        return model

    def screen(**config):
        s = create_defense(name, **config).screen(data, data, fit, 0)
        return np.nan_to_num(s.scores, nan=-1.0), s.removed

    changes = DATA_DEFENSE_CHANGES[name]
    assert set(changes) == {
        f.name for f in dataclasses.fields(defense_class(name).Config)
    }  # a new key needs a line here
    base_scores, base_removed = screen()
    for key, value in changes.items():
        scores, removed = screen(**{key: value})
        assert not (np.allclose(scores, base_scores) and np.array_equal(removed, base_removed)), (
            f"{name}.{key} changed nothing"
        )


TRAINING_DEFENSE_CHANGES = {
    "sam": {"rho": 1.0, "warmup_epochs": 1},
    "pamacf": {"eps": 1.0, "adv_reg": 0.3, "warmup_epochs": 1, "user_scale": 3.0},
}


@pytest.mark.parametrize("name", sorted(TRAINING_DEFENSE_CHANGES))
def test_every_key_of_sam_and_pamacf_changes_the_trained_victim(name):
    from distrec.defenses import defense_class
    from distrec.defenses.chain import Column, fit_defended

    data = _screening_data()
    victim = {"dim": 4, "epochs": 2, "lr": 0.05, "batch_size": 256, "backend": "memory"}

    def weights(**config):
        return fit_defended(Column("bpr", (name,)), victim, {name: config}, data).model.user_emb.detach().clone()

    changes = TRAINING_DEFENSE_CHANGES[name]
    assert set(changes) == {f.name for f in dataclasses.fields(defense_class(name).Config)}
    base = weights()
    assert torch.equal(base, weights())
    for key, value in changes.items():
        assert not torch.allclose(weights(**{key: value}), base), f"{name}.{key} changed nothing"


def test_every_pore_key_changes_the_votes_or_the_certificate_and_models_per_unit_changes_nothing():
    from distrec.data.matrix import UserItemCSR
    from distrec.defenses.pore import POREConfig, bagged_samples, certify
    from distrec.defenses.screening import training_matrix
    from distrec.models.itemknn import bagged_votes

    data = _screening_data()
    train = training_matrix(data)
    test = UserItemCSR.from_table(data.table("test"), data.n_users, data.n_items)

    def run(**config):
        c = POREConfig(**{"n_models": 20, "subsample": 30, "top_n": 10, **config})
        parts = [range(k, min(k + c.models_per_unit, c.n_models)) for k in range(0, c.n_models, c.models_per_unit)]
        votes = sum(
            bagged_votes(train, data.n_users, bagged_samples(data.n_users, c.subsample, ids, 0), c.top_n)
            for ids in parts
        )
        return votes, certify(votes, train, test, np.asarray([5, 6]), c, data.n_users, [0, 1, 2, 4])

    changes = {"n_models": 30, "subsample": 10, "top_n": 5, "alpha": 0.2}
    assert set(changes) | {"models_per_unit"} == {f.name for f in dataclasses.fields(POREConfig)}
    votes, cert = run()
    for key, value in changes.items():
        other_votes, other_cert = run(**{key: value})
        assert not (np.array_equal(other_votes, votes) and other_cert == cert), f"pore.{key} changed nothing"
    split_votes, split_cert = run(models_per_unit=3)  # how the work is cut into units, not what it computes
    assert np.array_equal(split_votes, votes) and split_cert == cert


def test_every_itemknn_key_changes_its_scores_and_seed_and_device_change_nothing():
    from distrec.models.itemknn import ItemKNNConfig
    from distrec.models.registry import create_victim

    data = _screening_data()
    users = torch.arange(data.n_users)

    def scores(**config):
        model = create_victim("itemknn", data.n_users, data.n_items, **config)
        model.fit(data, progress=False)
        return model.score(users)

    changes, no_effect = (
        {"neighbours": 3, "shrink": 100.0},
        {"seed": 7, "device": "cpu"},
    )  # itemknn draws nothing; where it runs
    assert set(changes) | set(no_effect) == {f.name for f in dataclasses.fields(ItemKNNConfig)}
    base = scores()
    for key, value in changes.items():
        assert not torch.allclose(scores(**{key: value}), base), f"itemknn.{key} changed nothing"
    for key, value in no_effect.items():
        assert torch.equal(scores(**{key: value}), base)
