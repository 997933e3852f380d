"""The population SharpAP coordinator on Ray."""

import numpy as np
import pytest
import torch

from distrec.attacks import SharpAP, create_attack
from distrec.attacks.base import AttackContext
from distrec.attacks.budget import Budget
from distrec.attacks.surrogates import WRMFSurrogate
from distrec.config import ConfigError
from distrec.data.matrix import UserItemCSR
from distrec.distributed.population import PopulationSharpAP


@pytest.fixture(scope="module")
def ctx():
    rng = np.random.default_rng(5)
    r, c = np.nonzero(rng.random((80, 50)) < 0.15)
    return AttackContext(UserItemCSR.from_arrays(r, c, 80, 50), np.array([4, 9]), Budget(5, 8), 0, progress=False)


def test_population_of_one_sam_member_is_single_process_sharpap(ray_session, ctx):
    surrogate = {"factors": 4, "iterations": 5}
    single = SharpAP(create_attack("revadv", outer_steps=2, lr=5.0), rho=0.05)
    expected = single.craft(ctx, WRMFSurrogate(ctx.train, 5, **surrogate))
    population = PopulationSharpAP(
        "revadv", {"outer_steps": 2, "lr": 5.0}, members=[{"kind": "sam", "rho": 0.05}], member_cpus=0.5
    )
    assert torch.equal(population.craft(ctx, surrogate), expected)
    assert [h["attack_loss"] for h in population.history] == [h["attack_loss"] for h in single.history]


def test_population_takes_the_worst_member(ray_session, ctx):
    members = [
        {"kind": "sam", "rho": 0.05},
        {"kind": "random", "rho": 0.05, "seed": 1},
        {"kind": "plain", "surrogate": {"seed": 7}},
    ]
    population = PopulationSharpAP("revadv", {"outer_steps": 1, "lr": 5.0}, members=members, member_cpus=0.5)
    fake = population.craft(ctx, {"factors": 4, "iterations": 5})
    assert fake.shape == (5, 50) and bool(fake[:, [4, 9]].all())
    for record in population.history:
        assert len(record["member_losses"]) == 3
        assert record["worst_member"] == int(np.argmax(record["member_losses"]))
        assert len(record["member_surrogate_t_hr@50"]) == 3 and record["surrogate_t_hr@50"] == min(
            record["member_surrogate_t_hr@50"]
        )


def test_softmax_combination_weights_members_by_loss():
    population = PopulationSharpAP("revadv", members=[{}, {}], combine="softmax", temperature=0.01)
    g1, g2 = torch.ones(2, 3), -torch.ones(2, 3)
    grad, record = population.combine([(g1, {"attack_loss": 100.0}), (g2, {"attack_loss": 101.0})])
    assert sum(record["member_weights"]) == pytest.approx(1.0) and record["member_weights"][1] > 0.5
    assert (grad < 0).all() and record["worst_member"] == 1
    with pytest.raises(ValueError, match="combine"):
        PopulationSharpAP("revadv", combine="mean")


def test_a_mixed_architecture_population_compares_members_relative_to_their_first_step(ray_session, ctx):
    members = [
        {"kind": "sam", "rho": 0.05},
        {
            "kind": "plain",
            "architecture": "lightgcn",
            "surrogate": {"dim": 4, "steps": 20, "unroll_steps": 5, "batch_size": 128},
        },
    ]
    population = PopulationSharpAP("revadv", {"outer_steps": 2, "lr": 5.0}, members=members, member_cpus=0.5)
    fake = population.craft(ctx, {"factors": 4, "iterations": 5})
    assert fake.shape == (5, 50) and bool(fake[:, [4, 9]].all())
    first = population.history[0]
    assert first["member_relative_losses"] == [1.0, 1.0]  # every member is its own scale at the first step
    for record in population.history:
        relative = np.array(record["member_losses"]) / np.abs(first["member_losses"])
        assert np.allclose(record["member_relative_losses"], relative) and record["worst_member"] == int(
            np.argmax(relative)
        )
    with pytest.raises(ValueError, match="not differentiable here"):
        PopulationSharpAP("revadv", members=[{"architecture": "neumf"}])
    with pytest.raises(ConfigError, match=r"members\.0\.surrogate\.factors: unknown key"):
        PopulationSharpAP("revadv", members=[{"architecture": "bpr", "surrogate": {"factors": 4}}])
