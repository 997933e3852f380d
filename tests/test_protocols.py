"""Threat-model presets: the protocols of the public poisoning implementations."""

import dataclasses
import json

import numpy as np
import pytest

from distrec.attacks.budget import ThreatModel, popularity_bucket, resolve_budget, select_targets, threat_model
from distrec.attacks.protocols import PROTOCOLS, check_protocol_data, with_preset
from distrec.cli import main
from distrec.config import ConfigError
from distrec.data.matrix import UserItemCSR
from distrec.tasks.craft import run_attack
from distrec.workflows.attack import evaluate_attack


def test_the_dataclass_defaults_are_distrecs_preset():
    defaults = ThreatModel()
    assert all(getattr(defaults, k) == v for k, v in PROTOCOLS["distrec"].threat.items())
    assert threat_model({}) == dataclasses.replace(defaults, preset="distrec")


def test_a_preset_fills_only_the_keys_a_config_leaves_unset(synthetic_dataset):
    train = UserItemCSR.from_table(
        synthetic_dataset.table("train"), synthetic_dataset.n_users, synthetic_dataset.n_items
    )
    revadv = threat_model({"preset": "revadv"})
    assert (revadv.target_bucket, revadv.n_targets, revadv.fake_ratio) == ("head", 5, 0.01)
    assert set(select_targets(revadv, train)) <= set(popularity_bucket(train, "head").tolist())
    assert resolve_budget(threat_model({"preset": "rapu"}), train).n_filler == 100
    assert threat_model({"preset": "rapu", "n_filler": 20}).n_filler == 20  # the config's own key wins
    assert with_preset({"preset": "gradpass", "seed": 3}) == {
        "fake_ratio": 0.01,
        "n_targets": 5,
        "target_bucket": "any",
        "preset": "gradpass",
        "seed": 3,
    }
    with pytest.raises(ConfigError, match=r"x\.yaml: threat\.preset: unknown preset 'revad'; presets: distrec, revadv"):
        with_preset({"preset": "revad"}, "x.yaml: threat")


def test_a_preset_checks_how_the_data_was_prepared():
    check_protocol_data(
        PROTOCOLS["arlib"], {"implicit_threshold": 4, "test_ratio": 0.1, "valid_ratio": 0.1, "split": "ratio"}, "c.yaml"
    )
    with pytest.raises(ConfigError) as err:
        check_protocol_data(
            PROTOCOLS["arlib"], {"implicit_threshold": None, "test_ratio": 0.2, "valid_ratio": 0.0}, "c.yaml"
        )
    assert "c.yaml.preset: 'arlib' expects data prepared with" in str(
        err.value
    ) and "implicit_threshold=None (preset: 4)" in str(err.value)


def test_attack_and_evaluation_follow_the_preset(synthetic_dataset, tmp_path):
    from distrec.data.dataset import prepare, write_prepared
    from distrec.data.preprocess import PrepareConfig
    from distrec.data.synthetic import make_synthetic

    with pytest.raises(ConfigError, match=r"--set: threat\.preset: 'rapu' expects data prepared with"):
        run_attack("random", synthetic_dataset.uri, config={"preset": "rapu"}, out=tmp_path / "x", progress=False)
    tables, meta = prepare(
        make_synthetic(n_users=300, n_items=200, avg_degree=15, image_size=0, seed=1),
        PrepareConfig(test_ratio=0.1, valid_ratio=0.1),
        "synthetic",
    )
    data = write_prepared(tables, meta, tmp_path / "ds")
    out = tmp_path / "p"
    crafted = run_attack("random", data.uri, config={"preset": "rapu", "n_filler": 20}, out=out, progress=False)
    assert (
        crafted["protocol"]["preset"] == "rapu"
        and crafted["threat_model"]["preset"] == "rapu"
        and crafted["budget"]["n_filler"] == 20
    )
    assert len(crafted["targets"]) == 5
    result = evaluate_attack(out, ["wrmf"], [0], {"wrmf": {"factors": 8, "iterations": 3}}, progress=False, store=None)
    wrmf = result["victims"]["wrmf"]
    assert result["protocol"]["metric"] == "hitone@50" and {"hitone@100", "t_hr@100", "clean_hitone@100"} <= set(wrmf)
    runs = wrmf["runs"][0]
    assert (
        runs["poisoned"]["hitone@100"] >= runs["poisoned"]["hitone@50"]
    )  # a larger K holds every hit of a smaller one


def test_threat_values_out_of_range_are_errors_naming_the_key(synthetic_dataset, tmp_path, capsys):
    for setting, message in [
        ("fake_ratio=0", "fake_ratio: Input should be greater than 0 (got 0)"),
        ("fake_ratio=1.5", "fake_ratio: Input should be less than or equal to 1 (got 1.5)"),
        ("n_filler=5000", f"n_filler (5000) exceeds the number of items ({synthetic_dataset.n_items})"),
        ("preset=ARLIB", "preset: unknown preset 'ARLIB'"),
        ("n_targets=500", "n_filler (13) must be at least the number of targets (500)"),
    ]:
        code = main(
            ["attack", "random", "--data", synthetic_dataset.uri, "--set", setting, "--out", str(tmp_path / "p")]
        )
        err = capsys.readouterr().err
        assert code == 2 and message in err and "--set" in err and "Traceback" not in err, (setting, err)


def test_cli_evaluation_table_shows_baseline_lift_hitone_and_rank(synthetic_dataset, tmp_path, capsys):
    assert (
        main(
            [
                "attack",
                "bandwagon",
                "--data",
                synthetic_dataset.uri,
                "--set",
                "n_fake=15",
                "--out",
                str(tmp_path / "p"),
                "--json",
            ]
        )
        == 0
    )
    capsys.readouterr()
    cfg = tmp_path / "victims.yaml"
    cfg.write_text("wrmf: {factors: 8, iterations: 3}\n")
    argv = [
        "evaluate-attack",
        "--poisoned",
        str(tmp_path / "p"),
        "--victims",
        "wrmf",
        "--seeds",
        "1",
        "--victim-config",
        str(cfg),
        "--cache",
        str(tmp_path / "c"),
    ]
    assert main(argv + ["--out", str(tmp_path / "r.json")]) == 0
    text = capsys.readouterr().out
    r = json.loads((tmp_path / "r.json").read_text())["victims"]["wrmf"]
    assert (
        "protocol distrec" in text
        and "| t_hr@50 no attack | t_hr@50 attack | lift | T-HR@50 | HitOne@50 | mean target rank |" in text
    )
    assert (
        f"| wrmf | {r['clean_t_hr@50']:.4f} | {r['t_hr@50']:.4f}" in text
        and f"{r['clean_mean_rank']:.1f} -> {r['mean_rank']:.1f}" in text
    )
    assert np.isclose(r["lift"]["t_hr@50"]["difference"], r["t_hr@50"] - r["clean_t_hr@50"])
    assert "cells: 2 run, 0 reused" in text and len(list((tmp_path / "c" / "cell").glob("*.json"))) == 2
    assert main(argv) == 0 and "cells: 0 run, 2 reused" in capsys.readouterr().out
