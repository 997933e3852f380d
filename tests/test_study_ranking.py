"""The ranking scenario: AdvRank perturbations crafted on one embedder, measured on others."""

import json
import os

import pyarrow.parquet as pq
import pytest
from conftest import run_on_three_nodes

from distrec.config import ConfigError
from distrec.study import load_study, run_study
from distrec.study.engine import CRASH_ENV

STUDY = """
scenario: ranking
dataset: {{path: {data}}}
victims:
  a: {{model: c2f2, model_config: {{embed_dim: 32}}, training: {{epochs: 1, batch_size: 100}}}}
  b: {{model: c2f2, model_config: {{embed_dim: 32}}, training: {{epochs: 1, batch_size: 100, seed: 1}}}}
defenses:
  est: {{eps: 0.1, steps: 1, alpha: 0.1}}
columns: [a, a+est, b]
surrogates: [a]
attacks: [CA+, SP-QA-]
eps: [0.1]
ks: [1]
trials: 30
batch_size: 15
top_fraction: 0.1
resources: {{train: {{num_cpus: 1}}, craft: {{num_cpus: 1}}, cell: {{num_cpus: 1}}}}
"""


@pytest.fixture
def study_file(tmp_path, digit_dataset):
    path = tmp_path / "ranking.yaml"
    path.write_text(STUDY.format(data=digit_dataset.uri))
    return path


def rows_of(out):
    return {(r["row"], r["column"]): r for r in pq.read_table(f"{out}/results.parquet").to_pylist()}


@pytest.mark.slow
def test_ranking_transfer_matrix_with_the_white_box_diagonal(ray_session, study_file, tmp_path, monkeypatch):
    out = tmp_path / "rank"
    result = run_study(study_file, str(out), progress=False)
    assert result["stages"] == {
        "train": {"total": 3, "skipped": 0, "run": 3},
        "craft": {"total": 2, "skipped": 0, "run": 2},
        "cell": {"total": 6, "skipped": 0, "run": 6},
    }
    rows = rows_of(out)
    assert set(rows) == {(f"{a} eps=0.1 k=1 @a", c) for a in ("CA+", "SP-QA-") for c in ("a", "a+est", "b")}
    for (_, column), r in rows.items():
        cell = json.loads((out / "cell" / f"{r['cell_id']}.json").read_text())
        if column == "a":  # the diagonal is the white-box cell the craft measured itself
            assert r["rank"] == pytest.approx(cell["whitebox"]["rank"], abs=1e-6)
            assert r["rank_before"] == pytest.approx(cell["whitebox"]["rank_before"], abs=1e-6)
    ca_plus = rows["CA+ eps=0.1 k=1 @a", "a"]
    assert ca_plus["rank"] < ca_plus["rank_before"] - 5  # CA+ raises the candidate on its own surrogate
    qa_minus = rows["SP-QA- eps=0.1 k=1 @a", "a"]
    assert qa_minus["rank"] > qa_minus["rank_before"] + 5  # QA- pushes the query's neighbours down
    assert rows["CA+ eps=0.1 k=1 @a", "b"]["rank_before"] != ca_plus["rank_before"]  # measured on b's own pool
    md = (out / "matrix.md").read_text()
    assert "| CA+ eps=0.1 k=1 @a |" in md and "| a | a+est | b |" in md
    again = run_study(study_file, str(out), progress=False)
    assert again["cells_run"] == 0 and all(c["run"] == 0 for c in again["stages"].values())
    cluster = run_on_three_nodes(study_file, f"file://{tmp_path}/cluster")  # 3 nodes, a file:// URI
    assert cluster["nodes"] == 3 and cluster["cells_run"] == 6
    assert {k: (r["rank"], r["rank_before"]) for k, r in rows_of(tmp_path / "cluster").items()} == {
        k: (r["rank"], r["rank_before"]) for k, r in rows.items()
    }


def test_a_worker_killed_while_training_restores_the_checkpoint(ray_session, study_file, tmp_path, monkeypatch):
    scenario = load_study(study_file)
    train_b = next(u for u in scenario.plan(str(tmp_path / "plan")) if u.stage == "train" and u.label == "b")
    marker = tmp_path / "crashed"
    monkeypatch.setenv(CRASH_ENV, f"{train_b.id}:{marker}")
    out = tmp_path / "chaos"
    run_study(study_file, str(out), progress=False)
    assert marker.exists()
    assert json.loads((out / "train" / f"{train_b.id}.json").read_text())["restored"] is True
    assert len(rows_of(out)) == 6


@pytest.mark.slow
def test_victim_hosts_give_the_task_matrix_and_a_killed_host_is_restored(ray_session, study_file, tmp_path):
    """Crafts and cells run in their victim's host; a host whose process dies after a cell ran, before its
    result was stored, is restarted by Ray and reloads the victim: the matrix equals the one of tasks."""
    tasks = tmp_path / "tasks"
    run_study(study_file, str(tasks), progress=False, victim_hosts=False)
    scenario = load_study(study_file)
    cell_b = next(u for u in scenario.plan(str(tmp_path / "plan")) if u.stage == "cell" and u.label.endswith("| b"))
    marker = tmp_path / "host-crashed"
    os.environ[CRASH_ENV] = f"{cell_b.id}:{marker}"
    try:
        hosted = tmp_path / "hosted"
        run_study(study_file, str(hosted), progress=False)
    finally:
        del os.environ[CRASH_ENV]
    assert marker.exists()

    def ran_in(out, stage):
        return {json.loads(p.read_text())["ran_in"] for p in (out / stage).glob("*.json")}

    assert ran_in(tasks, "cell") == ran_in(tasks, "craft") == {"task"}
    assert ran_in(hosted, "cell") == ran_in(hosted, "craft") == {"victim host"}
    assert ran_in(hosted, "train") == {"task"}
    craft_pids = {json.loads(p.read_text())["pid"] for p in (hosted / "craft").glob("*.json")}
    assert len(craft_pids) == 2  # the surrogate's two ready crafts got a host each (the pool fits 2)
    ranks = {k: (r["rank"], r["rank_before"]) for k, r in rows_of(tasks).items()}
    assert ranks == {k: (r["rank"], r["rank_before"]) for k, r in rows_of(hosted).items()} and len(ranks) == 6


@pytest.mark.parametrize(
    "old,new,message",
    [
        ("surrogates: [a]", "surrogates: [c]", "surrogates.0: 'c' is not one of the columns (a, a+est, b)"),
        ("attacks: [CA+, SP-QA-]", "attacks: [CA+, SP-CA-]", "attacks.1: unknown ranking attack 'SP-CA-'"),
        ("eps: [0.1]", "eps: [2]", "eps.0: Input should be less than or equal to 1 (got 2)"),
        (
            "training: {{epochs: 1, batch_size: 100}}",
            "training: {{epoch: 1}}",
            "victims.a.training.epoch: unknown key; valid keys: ",
        ),
        (
            "model: c2f2, model_config: {{embed_dim: 32}}, training: {{epochs: 1, batch_size: 100}}",
            "model: c3f3",
            "victims.a.model: unknown embedder 'c3f3'",
        ),
        ("est: {{eps: 0.1, steps: 1, alpha: 0.1}}", "apr: {{}}", "defenses.apr: not a defense of embedders"),
        ("columns: [a, a+est, b]", "columns: [a, a+est+est]", "columns.1: 'a+est+est' chains defenses; the ranking"),
        ("columns: [a, a+est, b]", "columns: [a, b+pca]", "columns.1: defense 'pca' is not configured under defenses"),
        ("columns: [a, a+est, b]", "columns: [a, c]", "columns.1: 'c' is not one of the study's victims (a, b)"),
    ],
)
def test_ranking_config_errors(tmp_path, digit_dataset, old, new, message):
    path = tmp_path / "bad.yaml"
    assert old in STUDY
    path.write_text(STUDY.replace(old, new).format(data=digit_dataset.uri))
    with pytest.raises(ConfigError) as err:
        load_study(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value), str(err.value)
