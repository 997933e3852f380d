"""``distrec rank train|attack|grid`` end to end on a small labeled-image dataset."""

import json
from pathlib import Path

import pytest
import yaml

from distrec.cli import main
from distrec.config import ConfigError
from distrec.study.advrank_grid import run_grid


def run_cli(capsys, *argv) -> dict:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_rank_train_and_attack_cli(digit_dataset, tmp_path, capsys):
    data = digit_dataset.uri
    trained = run_cli(
        capsys,
        "rank",
        "train",
        "--data",
        data,
        "--set",
        "training.epochs=2",
        "--set",
        "training.batch_size=100",
        "--set",
        "model_config.embed_dim=64",
        "--out",
        str(tmp_path / "m"),
        "--json",
    )
    assert (
        trained["metrics"]["recall@1"] > 95
        and trained["training"]["epochs"] == 2
        and (tmp_path / "m/model/model.safetensors").exists()
    )
    common = [
        "rank",
        "attack",
        "--model",
        str(tmp_path / "m"),
        "--data",
        data,
        "--k",
        "2",
        "--trials",
        "40",
        "--top-fraction",
        "0.05",
        "--json",
    ]
    clean = run_cli(capsys, *common, "--attack", "CA+", "--eps", "0")
    attacked = run_cli(capsys, *common, "--attack", "CA+", "--eps", "0.1")
    assert clean["rank"] == clean["rank_before"] == attacked["rank_before"]  # the same trials
    assert attacked["rank"] < clean["rank"] - 5 and attacked["steps"] == 20
    demoted = run_cli(capsys, *common, "--attack", "SP-QA-", "--eps", "0.1", "--k", "1")
    assert demoted["rank"] > demoted["rank_before"] and "sp_rank" in demoted


def test_rank_cli_errors(digit_dataset, tmp_path, capsys):
    assert (
        main(["rank", "train", "--data", digit_dataset.uri, "--set", "training.epoch=2", "--out", str(tmp_path)]) == 2
    )
    assert "--set: training.epoch: unknown key; valid keys: batch_size, epochs" in capsys.readouterr().err
    assert main(["rank", "train", "--data", digit_dataset.uri, "--set", "optimizer.lr=1", "--out", str(tmp_path)]) == 2
    assert "unknown key 'optimizer'" in capsys.readouterr().err


def test_grid_writes_the_table_and_resumes(digit_dataset, tmp_path, ray_session):
    model = {"model": "c2f2", "model_config": {"embed_dim": 32}, "training": {"epochs": 2, "batch_size": 100}}
    config = {
        "scenario": "ranking",
        "dataset": {"path": digit_dataset.uri},
        "victims": {"undefended": model, "defended": model},
        "defenses": {"est": {"eps": 0.3, "steps": 1, "alpha": 0.3}},
        "columns": ["undefended", "defended+est"],
        "surrogates": ["undefended", "defended+est"],
        "transfer": False,
        "eps": [0, 0.1],
        "ks": [1, 2],
        "trials": 30,
        "batch_size": 30,
        "top_fraction": 0.05,
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_grid(path, tmp_path / "out", progress=False)
    keys = {k for k in result if k != "meta"}
    assert len(keys) == 2 * 4 * 2 * 2 + 2 and "est/QA-/0.1/2" in keys and "undefended/recall@1" in keys
    assert result["undefended/CA+/0.1/1"] < result["undefended/CA+/0/1"]
    assert result["undefended/CA-/0.1/1"] > result["undefended/CA-/0/1"]
    name = Path(digit_dataset.uri).name
    assert result["meta"]["dataset"] == name
    table = (tmp_path / f"out/advrank_{name}.md").read_text()
    assert "| eps | CA+ | CA- | QA+ | QA- |" in table and "EST-defended" in table
    again = run_grid(path, tmp_path / "out", progress=False)  # every model and cell reused
    assert {k: v for k, v in again.items() if k != "meta"} == {k: v for k, v in result.items() if k != "meta"}
    assert again["meta"]["wall_seconds"] < result["meta"]["wall_seconds"]
    bad = dict(config, attacks=["CA+", "SP-CA-"])
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match="grid.yaml: attacks.1: unknown ranking attack 'SP-CA-'"):
        run_grid(path, tmp_path / "out2", progress=False)
    path.write_text(yaml.safe_dump(dict(config, transfer=True)))
    with pytest.raises(ConfigError, match="grid.yaml: the AdvRank grid attacks each column on itself: set transfer"):
        run_grid(path, tmp_path / "out2", progress=False)
