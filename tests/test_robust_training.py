"""The robust-training baselines of RAWP-FT (RAT, VAT) and the embedding-perturbation attack."""

import numpy as np
import pytest
import torch

from distrec.config import ConfigError, check
from distrec.data.dataset import prepare, write_prepared
from distrec.data.preprocess import PrepareConfig
from distrec.data.synthetic import make_synthetic
from distrec.defenses import create_defense, defense_class
from distrec.metrics.sampled import candidates
from distrec.models import create_victim


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    raw = make_synthetic(n_users=200, n_items=150, avg_degree=15, image_size=0, seed=4)
    tables, meta = prepare(raw, PrepareConfig(split="loo", test_negatives=50, seed=4), "synthetic")
    return write_prepared(tables, meta, tmp_path_factory.mktemp("robust") / "ds")


def batch(data, n=64):
    t = data.table("train")
    users, items = (torch.as_tensor(np.array(t.column(c).to_numpy()[:n])) for c in ("user_id", "item_id"))
    return users, items, torch.randint(0, data.n_items, (n, 4), generator=torch.Generator().manual_seed(0))


def test_rat_moves_every_hidden_output_by_eps_of_its_norm_uphill_and_trains(data):
    from distrec.defenses.rat import RATConfig, RATObjective, hooked

    model = create_victim(
        "deepcf",
        data.n_users,
        data.n_items,
        proj_dim=16,
        tower=[16, 12, 8],
        epochs=2,
        lr=1e-3,
        batch_size=128,
        backend="memory",
    )
    model.attach(data)
    users, pos, neg = batch(data)
    returned = RATObjective(RATConfig(eps=0.2, adv_reg=0.5)).backward(model, users, pos, neg, epoch=0)
    layers, outputs = model.hidden_layers(), {}

    def grab(k, out):
        out.retain_grad()
        outputs[k] = out
        return out

    with hooked(layers, grab):
        clean = model.loss(users, pos, neg)
    clean.backward()
    assert sorted(outputs) == [0, 1]
    step = {
        k: 0.2 * h.norm(dim=-1, keepdim=True) * torch.nn.functional.normalize(h.grad, dim=-1)
        for k, h in outputs.items()
    }
    with torch.no_grad(), hooked(layers, lambda k, out: out + step[k]):
        adversarial = model.loss(users, pos, neg)
    assert adversarial > clean  # the FGSM step on the activations raises the loss
    assert torch.isclose(returned, clean.detach() + 0.5 * adversarial, rtol=1e-5)
    history = create_defense("rat", eps=0.1).apply(model).fit(data, progress=False)
    assert history[-1]["loss"] < history[0]["loss"]
    assert defense_class("rat").supported_victims() == ["deepcf", "neumf"]
    with pytest.raises(ValueError, match=r"rat: eps: Input should be less than or equal to 1 \(got 2.0\)"):
        create_defense("rat", eps=2.0)


def test_vat_gives_the_best_fitted_users_the_largest_perturbation(data):
    from distrec.defenses.apr import APRConfig, APRObjective
    from distrec.defenses.vat import VATObjective, vulnerability

    g = vulnerability(torch.tensor([0.1, 0.1, 1.0, 2.0]), torch.tensor([0, 0, 1, 2]), 4)
    assert g[0] > g[1] > g[2] and g[3] == 1 and ((g > 0) & (g <= 1)).all()
    assert torch.isclose(g[0], torch.sigmoid(torch.tensor((0.8 - 0.1) / 0.8)))
    model = create_victim("neumf", data.n_users, data.n_items, dim=8, mlp_layers=[16, 8], epochs=1, backend="memory")
    users, pos, neg = batch(data)
    model.loss(users, pos, neg).backward()
    params = model.embedding_parameters()
    apr = APRObjective(APRConfig(eps=0.5)).perturbation(model, params, users, pos, neg)
    vat = VATObjective(APRConfig(eps=0.5)).perturbation(model, params, users, pos, neg)
    with torch.no_grad():
        g = vulnerability(model.example_losses(users, pos, neg), users, model.n_users)
    for p, a, v in zip(params, apr, vat):
        if p is model.user_gmf or p is model.user_mlp:
            assert torch.allclose(v, a * g[:, None]) and not torch.allclose(v, a)
        else:
            assert torch.equal(v, a)
    assert torch.isclose(model.example_losses(users, pos, neg).mean(), model.loss(users, pos, neg))
    history = create_defense("vat", eps=0.5).apply(model).fit(data, progress=False)
    assert np.isfinite(history[-1]["loss"])
    assert defense_class("vat").supported_victims() == ["bpr", "neumf"]


def test_the_embedding_attack_moves_each_embedding_row_by_eps_of_its_norm(data):
    from distrec.attacks.weights import WeightAttack, WeightAttackConfig

    model = create_victim("neumf", data.n_users, data.n_items, dim=8, mlp_layers=[16, 8], epochs=2, backend="memory")
    model.fit(data, progress=False)
    u, cands = candidates(data.table("test"), data.table("test_negatives"))
    attack = WeightAttack(model.eval(), WeightAttackConfig(eps=0.1, target="embeddings", batch_users=4))
    assert [w for _, w, _ in attack.matrices] == model.embedding_parameters()
    deltas = attack(torch.as_tensor(u[:4]), torch.as_tensor(cands[:4]))
    gmf_user = deltas[0]
    moved = gmf_user.norm(dim=1) > 0
    assert set(np.flatnonzero(moved.numpy())) == set(u[:4].tolist())  # only the attacked users' rows
    assert torch.allclose(gmf_user.norm(dim=1)[moved], 0.1 * model.user_gmf.norm(dim=1)[moved], rtol=1e-4)
    deepcf = create_victim("deepcf", data.n_users, data.n_items, proj_dim=8, tower=[8])
    with pytest.raises(NotImplementedError, match="no embedding tables"):
        WeightAttack(deepcf, WeightAttackConfig(target="embeddings"))
    with pytest.raises(ConfigError, match=r"target: Input should be 'weights' or 'embeddings' \(got 'activations'\)"):
        check(WeightAttackConfig, {"target": "activations"}, "weight attack")


def test_rawp_keeps_the_epoch_with_the_best_clean_plus_robust_hr(tmp_path):
    raw = make_synthetic(n_users=200, n_items=120, avg_degree=15, image_size=0, seed=2)
    tables, meta = prepare(raw, PrepareConfig(split="loo", valid_ratio=0.1, test_negatives=50, seed=2), "synthetic")
    ds = write_prepared(tables, meta, tmp_path / "ds")
    model = create_victim(
        "deepcf",
        ds.n_users,
        ds.n_items,
        proj_dim=16,
        tower=[16, 8],
        epochs=4,
        lr=1e-3,
        batch_size=256,
        backend="memory",
    )
    states = []
    history = (
        create_defense("rawp", gamma=0.005, select_best=True, select_users=80, select_negatives=50)
        .apply(model)
        .fit(
            ds, progress=False, on_epoch=lambda r: states.append({k: v.clone() for k, v in model.state_dict().items()})
        )
    )
    epochs = [r for r in history if "epoch" in r and "stage" not in r]
    totals = [r["valid_hr@10"] + r["valid_robust_hr@10"] for r in epochs]
    selection = history[-1]
    assert selection["stage"] == "selection" and selection["epoch"] == int(np.argmax(totals))
    assert all(torch.equal(v, states[selection["epoch"]][k]) for k, v in model.state_dict().items())
