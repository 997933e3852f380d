import json

from distrec.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_prepare_and_info_json(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    (tmp_path / "src/ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,1,4.0,10\n1,2,2.0,20\n2,1,5.0,30\n2,3,4.5,40\n"
    )
    code, out, _ = run(
        capsys,
        "data",
        "prepare",
        "ml-latest",
        "--root",
        str(tmp_path / "src"),
        "--out",
        str(tmp_path / "ds"),
        "--implicit-threshold",
        "4",
        "--split",
        "none",
        "--json",
    )
    assert code == 0
    prepared = json.loads(out)
    assert (prepared["users"], prepared["items"], prepared["interactions"]) == (2, 2, 3)
    code, out, _ = run(capsys, "data", "info", str(tmp_path / "ds"), "--json")
    info = json.loads(out)
    assert code == 0 and info["splits"] == {"train": 3, "test": 0} and info["interactions"] == 3


def test_bad_input_exits_2_with_located_message(tmp_path, capsys):
    (tmp_path / "ratings.dat").write_text("1::1::5::1\n1;2;3;4\n")
    code, out, err = run(capsys, "data", "prepare", "ml-1m", "--root", str(tmp_path), "--out", str(tmp_path / "ds"))
    assert code == 2 and out == ""
    assert f"{tmp_path / 'ratings.dat'}:2: wrong field count" in err and "';'" in err


def test_skip_reports_skipped_lines(tmp_path, capsys):
    (tmp_path / "ratings.dat").write_text("1::1::5::1\n1::2\n2::1::3::2\n")
    code, out, err = run(
        capsys,
        "data",
        "prepare",
        "ml-1m",
        "--root",
        str(tmp_path),
        "--out",
        str(tmp_path / "ds"),
        "--on-bad-lines",
        "skip",
        "--split",
        "none",
        "--json",
    )
    assert code == 0
    assert json.loads(out)["bad_lines"]["skipped"] == 1 and "skipped 1 bad lines" in err


def test_reader_options_through_set(tmp_path, capsys):
    (tmp_path / "t.csv").write_text("who,what\n5,6\n5,7\n")
    code, out, _ = run(
        capsys,
        "data",
        "prepare",
        "table",
        "--root",
        str(tmp_path / "t.csv"),
        "--out",
        str(tmp_path / "ds"),
        "--set",
        "user_col=who",
        "--set",
        "item_col=what",
        "--split",
        "none",
        "--json",
    )
    assert code == 0 and json.loads(out)["interactions"] == 2
    code, _, err = run(
        capsys,
        "data",
        "prepare",
        "table",
        "--root",
        str(tmp_path / "t.csv"),
        "--out",
        str(tmp_path / "ds2"),
        "--set",
        "user=who",
    )
    assert code == 2 and "has no option(s) ['user']" in err


def test_synthetic_is_seeded(tmp_path, capsys):
    a = json.loads(
        run(
            capsys,
            "data",
            "synthetic",
            "--out",
            str(tmp_path / "a"),
            "--seed",
            "3",
            "--set",
            "n_users=120",
            "--set",
            "n_items=80",
            "--json",
        )[1]
    )
    b = json.loads(
        run(
            capsys,
            "data",
            "synthetic",
            "--out",
            str(tmp_path / "b"),
            "--seed",
            "3",
            "--set",
            "n_users=120",
            "--set",
            "n_items=80",
            "--json",
        )[1]
    )
    assert a["interactions"] == b["interactions"] and a["users"] == 120
    assert (tmp_path / "a/train.parquet").read_bytes() == (tmp_path / "b/train.parquet").read_bytes()


def test_train_json_and_checkpoint(synthetic_dataset, tmp_path, capsys):
    config = tmp_path / "bpr.yaml"
    config.write_text("dim: 8\nepochs: 2\nbackend: memory\n")
    code, out, _ = run(
        capsys,
        "train",
        "bpr",
        "--data",
        synthetic_dataset.uri,
        "--config",
        str(config),
        "--set",
        "lr=0.01",
        "--out",
        str(tmp_path / "run"),
        "--json",
    )
    assert code == 0
    result = json.loads(out)
    assert {"recall@20", "ndcg@20", "recall@10", "precision@50", "hr@20"} <= set(result["metrics"])
    assert result["config"]["dim"] == 8 and result["config"]["lr"] == 0.01 and result["seed"] == 0
    assert result["fit_seconds"] > 0 and result["peak_rss_mb"] > 0 and len(result["history"]) == 2
    assert (tmp_path / "run/model/model.safetensors").exists() and json.loads(
        (tmp_path / "run/result.json").read_text()
    )["metrics"] == result["metrics"]


def test_train_config_errors_name_file_and_key(synthetic_dataset, tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("dim: 8\nfactors: 4\n")
    code, _, err = run(capsys, "train", "bpr", "--data", synthetic_dataset.uri, "--config", str(config))
    assert code == 2 and f"{config}: factors: unknown key; valid keys: backend, batch_size" in err
    config.write_text("dim: eight\n")
    code, _, err = run(capsys, "train", "bpr", "--data", synthetic_dataset.uri, "--config", str(config))
    assert code == 2 and f"{config}: dim: Input should be a valid integer" in err
    config.write_text("dim: [8\n")
    code, _, err = run(capsys, "train", "bpr", "--data", synthetic_dataset.uri, "--config", str(config))
    assert code == 2 and f"{config}:2:1: invalid YAML" in err


def test_train_help_lists_config_keys(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["train", "wrmf", "--help"])
    out = capsys.readouterr().out
    for key in ("factors", "iterations", "alpha", "reg", "solver", "cg_steps"):
        assert f"  {key} " in out


def test_attack_cross_field_error_reads_as_its_message(synthetic_dataset, tmp_path, capsys):
    """A threat-model check across fields has no key of its own: its message stands alone, without an
    empty 'key :' and the whole threat model echoed."""
    code, _, err = run(
        capsys,
        "attack",
        "random",
        "--data",
        synthetic_dataset.uri,
        "--set",
        "fake_ratio=1.5",
        "--out",
        str(tmp_path / "a"),
    )
    assert code == 2
    assert "--set: fake_ratio: Input should be less than or equal to 1 (got 1.5)" in err
    assert "key :" not in err
