"""The robustness scenario: DeepCF plain and with RAWP / AWP under the weight attack, on the NCF protocol."""

import json

import pyarrow.parquet as pq
import pytest
import yaml

from distrec.config import ConfigError
from distrec.study import load_study, run_study

STUDY = {
    "scenario": "robustness",
    "dataset": {
        "synthetic": {"n_users": 300, "n_items": 200, "avg_degree": 15, "image_size": 0, "seed": 1},
        "prepare": {"split": "loo", "test_negatives": 99},
    },
    "victims": {
        "deepcf": {
            "proj_dim": 32,
            "tower": [32, 16, 8],
            "epochs": 5,
            "lr": 0.001,
            "batch_size": 256,
            "backend": "memory",
        }
    },
    "defenses": {"rawp": {"gamma": 0.005}},
    "attacks": [{"method": "fgsm", "eps": [0.05, 1.0]}, {"method": "pgd", "eps": [1.0], "steps": 3}],
    "batch_users": 1,
    "eval_users": 150,
    "full_ranking": True,
}


def write(tmp_path, **changes):
    path = tmp_path / "robustness.yaml"
    path.write_text(yaml.safe_dump(dict(STUDY, **changes)))
    return path


def test_robustness_matrix(ray_session, tmp_path):
    path = write(tmp_path)
    out = tmp_path / "out"
    result = run_study(path, str(out), progress=False)
    assert result["stages"]["train"]["run"] == 2 and result["cells"] == 8
    rows = {(r["row"], r["column"]): r for r in pq.read_table(out / "results.parquet").to_pylist()}
    assert set(rows) == {
        (r, c) for r in ("no attack", "fgsm eps=0.05", "fgsm eps=1", "pgd eps=1") for c in ("deepcf", "deepcf+rawp")
    }
    for c in ("deepcf", "deepcf+rawp"):
        assert rows["no attack", c]["hr@10"] > 0.15  # it learned: random candidates give 0.10
        assert rows["fgsm eps=1", c]["hr@10"] < rows["no attack", c]["hr@10"]  # a large weight attack hurts
        assert (
            rows["no attack", c]["full_hr@10"] <= rows["no attack", c]["hr@10"]
            and rows["fgsm eps=1", c]["full_recall@20"] is None
        )
    assert rows["no attack", "deepcf"]["ndcg@10"] != rows["no attack", "deepcf+rawp"]["ndcg@10"]
    assert (
        "| fgsm eps=1 |" in (out / "matrix.md").read_text()
        and "on 150 test users drawn" in (out / "matrix.md").read_text()
    )
    assert {json.loads(r["config"])["eval_users"] for r in rows.values()} == {150}
    assert rows["no attack", "deepcf"]["all_hr@10"] > 0.15 and rows["fgsm eps=1", "deepcf"]["all_hr@10"] is None
    training = json.loads((out / "study.json").read_text())["summary"]["training"]
    assert set(training) == {"deepcf seed 0", "deepcf+rawp seed 0"} and len(training["deepcf seed 0"]["epochs"]) == 5


@pytest.mark.parametrize(
    "changes,message",
    [
        (
            {"victims": {"wrmf": {}}},
            "victims.wrmf: the weight attack needs a victim with weight matrices: deepcf, neumf",
        ),
        (
            {"columns": ["deepcf+apr"], "defenses": {"apr": {}}},
            "columns.0: defense 'apr' cannot be applied to victim 'deepcf'; it supports bpr, lightgcn, neumf",
        ),
        ({"defenses": {"rawp": {"gamma": 2}}}, "defenses.rawp.gamma: Input should be less than or equal to 1 (got 2)"),
        ({"attacks": [{"method": "cw", "eps": [0.1]}]}, "attacks.0.method: Input should be 'fgsm' or 'pgd' (got 'cw')"),
        (
            {"attacks": [{"method": "fgsm", "eps": [0.1], "target": "embeddings"}]},
            "attacks.0.target: embeddings: victims deepcf have no embedding tables",
        ),
        ({"eval_users": 0}, "eval_users: Input should be greater than 0 (got 0)"),
        ({"attacks": [{"eps": [0.1, 2]}]}, "attacks.0.eps.1: Input should be less than or equal to 1 (got 2)"),
        (
            {"dataset": {"synthetic": {"seed": 1}}},
            "dataset.prepare.test_negatives: the sampled protocol needs stored negatives",
        ),
    ],
)
def test_robustness_config_errors(tmp_path, changes, message):
    with pytest.raises(ConfigError) as err:
        load_study(write(tmp_path, **changes))
    assert message in str(err.value), str(err.value)


def test_two_entries_of_one_victim_under_labels(tmp_path, synthetic_dataset):
    from distrec.defenses.chain import Column, fit_defended

    neumf = {"dim": 4, "mlp_layers": [8, 4], "epochs": 1, "batch_size": 512, "backend": "memory"}
    victims = {"gmf": dict(neumf, victim="neumf", branch="gmf"), "neumf": neumf}
    scenario = load_study(write(tmp_path, victims=victims, defenses={"rawp": {}}, columns=["gmf", "gmf+rawp", "neumf"]))
    trains = [u for u in scenario.plan(str(tmp_path / "store")) if u.stage == "train"]
    assert len({u.id for u in trains}) == 3 and {u.label.split(" ")[0] for u in trains} == {"gmf", "gmf+rawp", "neumf"}
    model = fit_defended(Column.parse("gmf"), victims["gmf"], {}, synthetic_dataset).model
    assert model.name == "neumf" and model.config.branch == "gmf"
    with pytest.raises(ConfigError, match=r"robustness.yaml: victims.gmf.victim: unknown victim 'neumff'"):
        load_study(write(tmp_path, victims={"gmf": dict(neumf, victim="neumff")}))
    with pytest.raises(ConfigError, match=r"robustness.yaml: victims.gmf.branch: Input should be"):
        load_study(write(tmp_path, victims={"gmf": dict(neumf, victim="neumf", branch="cnn")}))
