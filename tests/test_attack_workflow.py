"""The attack and evaluate-attack commands end to end on the synthetic dataset."""

import json

import numpy as np
import pyarrow.compute as pc
import pytest

from distrec.cli import main
from distrec.data.dataset import PreparedDataset
from distrec.evaluation.attack_effect import measure
from distrec.models import create_victim
from distrec.study.outputs import ratio
from distrec.tasks.craft import run_attack
from distrec.workflows.attack import evaluate_attack


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def poisoned(synthetic_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("attack") / "revadv"
    result = run_attack(
        "revadv",
        synthetic_dataset.uri,
        sharpap=True,
        config={
            "fake_ratio": 0.02,
            "n_targets": 2,
            "target_bucket": "torso",
            "outer_steps": 2,
            "rho": 0.1,
            "surrogate.factors": 8,
            "surrogate.iterations": 4,
        },
        out=out,
        progress=False,
    )
    return out, result


def test_attack_result_carries_config_seed_budget_and_timings(poisoned, synthetic_dataset):
    out, result = poisoned
    assert result["attack"] == "revadv+sharpap" and result["sharpap"]["rho"] == 0.1
    assert result["config"]["outer_steps"] == 2 and result["surrogate"]["config"]["factors"] == 8
    n_real = synthetic_dataset.n_users
    assert result["budget"] == {"n_fake": round(0.02 * n_real), "n_filler": result["budget"]["n_filler"]}
    assert (
        result["seed"] == 0
        and len(result["targets"]) == 2
        and result["craft_seconds"] > 0
        and result["peak_rss_mb"] > 0
    )
    assert len(result["history"]) == 3 and all("rho_effective" in h for h in result["history"])
    ds = PreparedDataset(out)
    assert ds.metadata["attack"]["targets"] == result["targets"] and ds.info()["fake_users"] == result["n_fake"]


def test_a_one_member_population_crafts_what_single_surrogate_sharpap_crafts(
    ray_session, synthetic_dataset, poisoned, tmp_path
):
    """``run_attack(population=...)`` routes the SharpAP keys to the population: one SAM member on a Ray
    actor gives the profiles of the in-process SharpAP attack with the same config."""
    out, single = poisoned
    config = {
        "fake_ratio": 0.02,
        "n_targets": 2,
        "target_bucket": "torso",
        "outer_steps": 2,
        "rho": 0.1,
        "surrogate.factors": 8,
        "surrogate.iterations": 4,
    }
    population = {"members": [{"kind": "sam"}], "member_cpus": 0.5}
    result = run_attack(
        "revadv",
        synthetic_dataset.uri,
        sharpap=True,
        config=config,
        out=tmp_path / "p",
        progress=False,
        population=population,
    )
    assert result["targets"] == single["targets"] and [h["attack_loss"] for h in result["history"]] == pytest.approx(
        [h["attack_loss"] for h in single["history"]]
    )
    fake = lambda path: sorted(
        map(
            tuple,
            PreparedDataset(path).table("train").filter(pc.field("is_fake")).select(["user_id", "item_id"]).to_pylist(),
        )
    )  # noqa: E731
    assert fake(tmp_path / "p") == fake(out)


def test_evaluate_attack_reports_means_stds_lift_and_reuses_clean_runs(poisoned, tmp_path, ray_session):
    out, crafted = poisoned
    store = tmp_path / "store"
    configs = {"wrmf": {"factors": 8, "iterations": 3}, "bpr": {"dim": 8, "epochs": 1, "backend": "memory"}}
    result = evaluate_attack(out, ["wrmf", "bpr"], 2, configs, progress=False, store=store)
    assert set(result["victims"]) == {"wrmf", "bpr"} and result["seeds"] == [0, 1]
    assert (result["cells_run"], result["cells_reused"]) == (8, 0)  # (no attack | the attack) x 2 victims x 2 seeds
    wrmf = result["victims"]["wrmf"]
    for key in (
        "t_hr@10",
        "t_hr@20",
        "t_hr@50",
        "t_ndcg@10",
        "hitone@10",
        "mean_rank",
        "recall@20_with_fakes",
        "recall@20_without_fakes",
    ):
        assert key in wrmf and key in wrmf["std"]
    runs = wrmf["runs"]
    assert wrmf["t_hr@10"] == pytest.approx((runs[0]["poisoned"]["t_hr@10"] + runs[1]["poisoned"]["t_hr@10"]) / 2)
    assert wrmf["lift"]["mean_rank"]["difference"] == pytest.approx(wrmf["mean_rank"] - wrmf["clean_mean_rank"])
    assert wrmf["lift"]["t_hr@50"]["ratio"] == ratio(wrmf["t_hr@50"], wrmf["clean_t_hr@50"])  # the engine's lift
    assert runs[0]["poisoned"]["recall@20"] != runs[0]["clean"]["recall@20"]  # the fake users change the model
    assert result["protocol"]["preset"] == "distrec" and result["targets"] == crafted["targets"]
    again = evaluate_attack(out, ["wrmf"], [0], configs, progress=False, store=store)
    assert (again["cells_run"], again["cells_reused"]) == (0, 2) and again["victims"]["wrmf"]["runs"][0] == runs[0]
    other = evaluate_attack(out, ["wrmf"], [0], {"wrmf": {"factors": 4, "iterations": 3}}, progress=False, store=store)
    assert other["cells_run"] == 2  # another config is another victim, clean and poisoned


def test_evaluate_attack_measures_the_poisoned_dataset_and_the_data_it_was_made_from(
    poisoned, synthetic_dataset, tmp_path, ray_session
):
    """The study's two rows are the victim trained on the original clean data and on the poisoned dataset
    itself (its fake users carried over by the ``poisoned`` attack), measured on the attack's targets."""
    out, crafted = poisoned
    result = evaluate_attack(out, ["wrmf"], [0], {"wrmf": {"factors": 8, "iterations": 3}}, progress=False, store=None)
    run = result["victims"]["wrmf"]["runs"][0]
    targets = np.asarray(crafted["targets"])
    for data, key in ((synthetic_dataset, "clean"), (PreparedDataset(out), "poisoned")):
        model = create_victim("wrmf", data.n_users, data.n_items, factors=8, iterations=3, seed=0)
        model.fit(data, progress=False)
        expected = measure(model, data, targets, synthetic_dataset.n_users, (10, 20, 50))
        for m in ("t_hr@50", "mean_rank", "recall@20"):
            assert run[key][m] == pytest.approx(expected[m], rel=1e-5), (key, m)
    assert run["clean"]["mean_rank"] != run["poisoned"]["mean_rank"]


def test_cli_attack_and_evaluate_json(synthetic_dataset, tmp_path, capsys):
    code, out, _ = run(
        capsys,
        "attack",
        "bandwagon",
        "--data",
        synthetic_dataset.uri,
        "--set",
        "n_fake=5",
        "--set",
        "n_filler=12",
        "--out",
        str(tmp_path / "p"),
        "--json",
    )
    assert code == 0
    crafted = json.loads(out)
    assert crafted["n_fake"] == 5 and crafted["fake_interactions"] == 60
    cfg = tmp_path / "victims.yaml"
    cfg.write_text("wrmf: {factors: 8, iterations: 3}\n")
    code, out, _ = run(
        capsys,
        "evaluate-attack",
        "--poisoned",
        str(tmp_path / "p"),
        "--victims",
        "wrmf",
        "--seeds",
        "2",
        "--victim-config",
        str(cfg),
        "--cache",
        str(tmp_path / "store"),
        "--json",
    )
    assert code == 0
    result = json.loads(out)
    assert {"t_hr@10", "t_hr@20", "t_hr@50", "t_ndcg@10", "hitone@10", "std"} <= set(result["victims"]["wrmf"])
    assert result["cells_run"] == 4 and (tmp_path / "store" / "evaluations").is_dir()


def test_cli_rejects_bad_keys_and_non_gradient_sharpap(synthetic_dataset, tmp_path, capsys):
    code, _, err = run(
        capsys, "attack", "random", "--data", synthetic_dataset.uri, "--set", "steps=3", "--out", str(tmp_path / "p")
    )
    assert code == 2 and "unknown key 'steps'" in err and "--set" in err
    code, _, err = run(
        capsys,
        "attack",
        "revadv",
        "--data",
        synthetic_dataset.uri,
        "--set",
        "outer_steps=abc",
        "--out",
        str(tmp_path / "p"),
    )
    assert code == 2 and "--set: outer_steps: Input should be a valid integer" in err
    code, _, err = run(
        capsys, "attack", "random", "--sharpap", "--data", synthetic_dataset.uri, "--out", str(tmp_path / "p")
    )
    assert code == 2 and "sharpap wraps a gradient attack" in err
    code, _, err = run(capsys, "evaluate-attack", "--poisoned", synthetic_dataset.uri, "--victims", "wrmf")
    assert code == 2 and "not a poisoned dataset" in err


def test_imported_profiles_go_through_the_same_checks(synthetic_dataset, tmp_path):
    item_map = synthetic_dataset.table("item_map").sort_by("internal").column("original").to_pylist()
    path = tmp_path / "fake.txt"
    path.write_text(f"{item_map[3]} {item_map[4]} {item_map[10]}\n{item_map[3]} {item_map[4]}\n")
    config = {"path": str(path), "target_original_ids": [str(item_map[3]), str(item_map[4])], "n_filler": 3}
    result = run_attack("import", synthetic_dataset.uri, config=config, out=tmp_path / "p", progress=False)
    assert result["targets"] == [3, 4] and result["n_fake"] == 2 and result["fake_interactions"] == 5
    assert result["profiles_without_every_target"] == 0
    path.write_text(f"{item_map[3]} {item_map[10]}\n{item_map[3]} {item_map[4]} {item_map[9]}\n")  # one lacks 4
    result = run_attack("import", synthetic_dataset.uri, config=config, out=tmp_path / "q", progress=False)
    assert result["profiles_without_every_target"] == 1 and result["fake_interactions"] == 5  # kept and counted
    path.write_text(f"{item_map[3]} {item_map[4]} {item_map[9]} {item_map[10]}\n")
    with pytest.raises(ValueError, match="over the budget n_filler=3"):  # the budget still holds
        run_attack("import", synthetic_dataset.uri, config=config, out=tmp_path / "r", progress=False)


def test_a_changed_profile_file_is_a_new_craft_and_a_missing_one_a_config_error(synthetic_dataset, tmp_path):
    from distrec.config import ConfigError
    from distrec.study.runner import study_from_dict

    item_map = synthetic_dataset.table("item_map").sort_by("internal").column("original").to_pylist()
    path = tmp_path / "fake.txt"
    path.write_text(f"{item_map[3]} {item_map[4]} {item_map[10]}\n")
    attack = {"name": "import", "config": {"path": str(path), "target_original_ids": [str(item_map[3])]}}
    raw = {"dataset": {"path": synthetic_dataset.uri}, "attacks": [attack], "victims": {"wrmf": {"factors": 4}}}

    def craft_ids() -> list[str]:
        return [u.id for u in study_from_dict(raw, "s.yaml").plan(str(tmp_path / "s")) if u.stage == "craft"]

    first = craft_ids()
    assert craft_ids() == first
    path.write_text(f"{item_map[3]} {item_map[5]} {item_map[10]}\n")
    assert craft_ids() != first  # the file's content is in the craft's id, not only its name
    attack["config"]["path"] = str(tmp_path / "missing.txt")
    with pytest.raises(ConfigError, match=r"s.yaml: attacks.0.config.path: .*missing.txt is not a file"):
        study_from_dict(raw, "s.yaml")
