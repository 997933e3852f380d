"""The study engine with the poisoning scenario: outputs, resume, a crashed worker, config errors,
a file:// URI, 3 nodes, a defended column."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import run_on_three_nodes

from distrec.config import ConfigError
from distrec.study import load_study, run_study
from distrec.study.engine import CRASH_ENV
from distrec.study.outputs import write_matrix
from distrec.study.runner import rewrite_outputs, study_from_dict

STUDY = """
dataset:
  synthetic: {n_users: 150, n_items: 80, avg_degree: 10, image_size: 0, seed: 2}
threat: {n_fake: 4, n_targets: 2, target_bucket: torso, seed: 0}
surrogates:
  wrmf: {factors: 8, iterations: 3}
attacks:
  - {name: random}
  - {name: revadv, config: {outer_steps: 1, lr: 2.0}}
victims:
  wrmf: {factors: 8, iterations: 4}
  bpr: {dim: 8, epochs: 2, lr: 0.01, batch_size: 256, backend: memory}
seeds: [0, 1]
resources: {craft: {num_cpus: 1}, cell: {num_cpus: 1}}
"""


@pytest.fixture
def study_file(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(STUDY)
    return path


def metrics_by_cell(out):
    table = pq.read_table(f"{out}/results.parquet").to_pylist()
    return {r["cell_id"]: json.loads(r["metrics"]) for r in table}, table


def test_study_outputs_and_resume(ray_session, study_file, tmp_path):
    out = str(tmp_path / "run")
    first = run_study(study_file, out, progress=False)
    assert (first["cells"], first["cells_run"], first["cells_skipped"], first["stages"]["craft"]["run"]) == (
        12,
        12,
        0,
        2,
    )
    metrics, rows = metrics_by_cell(out)
    assert {r["row"] for r in rows} == {"no attack", "random", "revadv@wrmf"} and len(rows) == 12
    assert all(json.loads(r["config"])["seed"] == r["seed"] and r["host"] for r in rows)
    md = Path(first["matrix_md"]).read_text()
    assert "| revadv@wrmf |" in md and "| wrmf | bpr |" in md and "x) |" in md  # the lift over no attack
    assert (
        md.startswith("# ") and "t_hr@50 (%), mean ± std" in md and "Protocol: preset distrec" in md
    )  # the preset's headline metric
    assert "hitone@50 (%), mean over seeds (difference from the baseline)" in md and "mean_rank, mean over seeds" in md
    baseline = {r["column"]: r["t_hr@20"] for r in rows if r["row"] == "no attack" and r["seed"] == 0}
    assert all(r["mean_rank"] >= 1 for r in rows) and set(baseline) == {"wrmf", "bpr"}
    assert Path(first["heatmap_png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    study = json.loads(Path(first["study_json"]).read_text())
    assert study["stages"]["cell"] == {"total": 12, "skipped": 0, "run": 12} and study["config"]["seeds"] == [0, 1]
    again = run_study(study_file, out, progress=False)
    assert (again["cells_run"], again["cells_skipped"], again["stages"]["craft"]["run"]) == (0, 12, 0)
    # an interrupted study: two cells lost their results; rerunning computes only those, identically
    lost = [r["cell_id"] for r in rows[:2]]
    for cell in lost:
        (tmp_path / "run" / "cell" / f"{cell}.json").unlink()
    resumed = run_study(study_file, out, progress=False)
    assert resumed["cells_run"] == 2
    assert metrics_by_cell(out)[0] == metrics
    Path(first["matrix_md"]).unlink()  # outputs written again from results.parquet alone, nothing run
    assert rewrite_outputs(study_file, out)["matrix"] + "\n" == Path(first["matrix_md"]).read_text() == md
    with pytest.raises(ConfigError, match="results.parquet does not exist: run the study"):
        rewrite_outputs(study_file, str(tmp_path / "never-run"))


def test_a_wrapped_attack_is_compared_seed_by_seed_with_the_plain_attack_it_wraps(tmp_path):
    """Poisoning pairs each SharpAP or population row with the plain row of the same attack and config;
    the matrix gives the paired differences (metric and mean rank) and the seeds on which the row wins."""
    raw = yaml.safe_load(STUDY)
    raw["attacks"] += [
        {"name": "revadv", "sharpap": {"rho": 0.1}, "config": {"outer_steps": 1, "lr": 2.0}},
        {
            "name": "revadv",
            "sharpap": {"rho": 0.1},
            "config": {"outer_steps": 2, "lr": 2.0},
            "label": "longer",
        },  # no plain twin
        {
            "name": "revadv",
            "label": "pop",
            "config": {"outer_steps": 1, "lr": 2.0},
            "population": {"members": [{"kind": "sam"}]},
        },
    ]
    scenario = study_from_dict(raw, "pairs.yaml")
    assert scenario.pairs() == [("revadv+sharpap@wrmf", "revadv@wrmf"), ("pop@wrmf", "revadv@wrmf")]
    values = {
        ("revadv@wrmf", 0): (0.10, 500),
        ("revadv@wrmf", 1): (0.20, 400),
        ("revadv+sharpap@wrmf", 0): (0.13, 490),
        ("revadv+sharpap@wrmf", 1): (0.19, 380),
    }
    cells = [
        {"row": r, "column": "wrmf", "seed": s, "metrics": {"t_hr@50": v, "mean_rank": rank}, "config": {}}
        for (r, s), (v, rank) in values.items()
    ]
    md = write_matrix(scenario, cells, str(tmp_path), "pairs")["matrix"]
    assert (
        "| revadv+sharpap@wrmf vs revadv@wrmf | +1.00 (1/2), rank -15 |" in md
    )  # (+3 - 1) / 2 points, (-10 - 20) / 2 ranks
    assert "pop@wrmf vs" not in md  # no cells for it: no line


def test_a_worker_killed_mid_cell_does_not_change_the_study(ray_session, study_file, tmp_path, monkeypatch):
    reference = str(tmp_path / "ref")
    run_study(study_file, reference, progress=False)
    expected, rows = metrics_by_cell(reference)
    victim_cell = next(r["cell_id"] for r in rows if r["row"] == "revadv@wrmf" and r["column"] == "bpr")
    marker = tmp_path / "crashed"
    monkeypatch.setenv(CRASH_ENV, f"{victim_cell}:{marker}")
    out = str(tmp_path / "chaos")
    result = run_study(study_file, out, progress=False)
    assert marker.exists()  # the worker process did exit in the middle of that cell
    assert result["cells_run"] == 12 and metrics_by_cell(out)[0] == expected
    row = json.loads((tmp_path / "chaos" / "cell" / f"{victim_cell}.json").read_text())
    assert row["restored"] is True  # the retried cell resumed from its checkpoint


def test_a_labelled_attack_is_a_row_of_its_own(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(
        STUDY.replace(
            "lr: 2.0}}", "lr: 2.0}}\n  - {name: revadv, label: revadv lr=1, config: {outer_steps: 1, lr: 1.0}}"
        )
    )
    crafts = [u for u in load_study(path).plan(str(tmp_path / "plan")) if u.stage == "craft"]
    assert [u.label for u in crafts] == ["random", "revadv@wrmf", "revadv lr=1@wrmf"]
    assert (
        crafts[1].payload["config"]["lr"] == 2.0
        and crafts[2].payload["config"]["lr"] == 1.0
        and crafts[1].id != crafts[2].id
    )


BAD_CONFIGS = [
    (
        "resources: {craft: {num_cpus: 1}, cell: {num_cpus: 1}}",
        "resources: {craft: {num_cpu: 1}}",
        "resources.craft.num_cpu: unknown key; valid keys: num_cpus, num_gpus",
    ),
    (
        "resources: {craft: {num_cpus: 1}, cell: {num_cpus: 1}}",
        "resources: {train: {num_cpus: 1}}",
        "resources.train: unknown stage; the poisoning scenario's stages: craft, base, cell",
    ),
    ("seeds: [0, 1]", "seeds: [zero]", "seeds.0: Input should be a valid integer"),
    ("seeds: [0, 1]", "seedz: [0, 1]", "seedz: unknown key; valid keys: attacks, columns, dataset, defenses"),
    (
        "  wrmf: {factors: 8, iterations: 4}",
        "  wrmf: {factorz: 8, iterations: 4}",
        "victims.wrmf.factorz: unknown key; valid keys: alpha, bucket_entries, cg_steps, device, eval_every, factors",
    ),
    (
        "  wrmf: {factors: 8, iterations: 4}",
        "  wrmff: {factors: 8}",
        "victims.wrmff: unknown victim 'wrmff'; registered: ",
    ),
    (
        "  wrmf: {factors: 8, iterations: 4}",
        "  wrmf: {factors: eight, iterations: 4}",
        "victims.wrmf.factors: Input should be a valid integer",
    ),
    ("- {name: random}", "- {name: randon}", "attacks.0.name: unknown attack 'randon'; registered: "),
    (
        "config: {outer_steps: 1, lr: 2.0}",
        "config: {outer_step: 1, lr: 2.0}",
        "attacks.1.config.outer_step: unknown key; valid keys: ",
    ),
    (
        "- {name: random}",
        "- {name: random, sharpap: {rho: 0.1}}",
        "attacks.0: SharpAP wraps gradient attacks only; 'random' uses no surrogate",
    ),
    (
        "config: {outer_steps: 1, lr: 2.0}}",
        "config: {outer_steps: 1, lr: 2.0}}\n  - {name: revadv, config: {lr: 1.0}}",
        "attacks.2: its row 'revadv@wrmf' is also attacks.1's; give one of them a `label`",
    ),
    ("n_fake: 4,", "fake_ratio: 1.5,", "threat.fake_ratio: Input should be less than or equal to 1 (got 1.5)"),
    (
        "target_bucket: torso",
        "target_bucket: middle",
        "threat.target_bucket: Input should be 'head', 'torso', 'tail' or 'any' (got 'middle')",
    ),
    (
        "n_fake: 4,",
        "preset: revadvv, n_fake: 4,",
        "threat.preset: unknown preset 'revadvv'; presets: distrec, revadv, gradpass, arlib, rapu",
    ),
    (
        "seeds: [0, 1]",
        "seeds: [0, 1]\nmetric: hitone@100",
        "metric: 'hitone@100' is not measured under preset 'distrec' (K: [10, 20, 50])",
    ),
    (
        "  wrmf: {factors: 8, iterations: 3}",
        "  neumf: {dim: 8}",
        "surrogates.neumf: unknown surrogate; differentiable surrogates: bpr, lightgcn, wrmf",
    ),
    (
        "  wrmf: {factors: 8, iterations: 3}",
        "  bpr: {factors: 8}",
        "surrogates.bpr.factors: unknown key; valid keys: batch_size, device, dim, fake_negatives",
    ),
    ("seeds: [0, 1]", "seeds: [0, 1]\nmetric: t_hr@21", "metric: unknown metric 't_hr@21'"),
    (
        "seeds: [0, 1]",
        "seeds: [0, 1]\ncolumns: [wrmf+apr]\ndefenses: {apr: {}}",
        "columns.0: defense 'apr' cannot be applied to victim 'wrmf'; it supports bpr, lightgcn",
    ),
    (
        "seeds: [0, 1]",
        "seeds: [0, 1]\ndefenses: {apr: {epz: 1}}",
        "defenses.apr.epz: unknown key; valid keys: adv_reg, eps, warmup_epochs",
    ),
    (
        "seeds: [0, 1]",
        "seeds: [0, 1]\ndefenses: {apr: {eps: -1}}",
        "defenses.apr.eps: Input should be greater than 0 (got -1)",
    ),
    ("seeds: [0, 1]", "seeds: [0, 1]\ndefenses: {aprr: {}}", "defenses.aprr: unknown defense; registered: "),
    (
        "seeds: [0, 1]",
        "seeds: [0, 1]\ndefenses: {pca: {fpr: 1.5}}",
        "defenses.pca.fpr: Input should be less than 1 (got 1.5)",
    ),
    (
        "seeds: [0, 1]",
        "seeds: [0, 1]\ndefenses: {pore: {n_models: 0}}",
        "defenses.pore.n_models: Input should be greater than 0 (got 0)",
    ),
    (
        "seeds: [0, 1]",
        "seeds: [0, 1]\ncolumns: [bpr+pore]\ndefenses: {pore: {}}",
        "columns.0: defense 'pore' cannot be applied to victim 'bpr'; it supports itemknn",
    ),
    (
        "  bpr: {dim: 8, epochs: 2, lr: 0.01, batch_size: 256, backend: memory}",
        "  bpr: {dim: 8, epochs: 2, lr: 0.01, batch_size: 256, backend: memory}\n  itemknn: {}\ncolumns: [itemknn+pca+pore]\ndefenses: {pca: {}, pore: {}}",
        "columns.0: 'itemknn+pca+pore': 'pore' is an ensemble of its own and takes no other defense in its column",
    ),
    (
        "seeds: [0, 1]",
        "seeds: [0, 1]\ndefenses: {sam: {rho: 0}}",
        "defenses.sam.rho: Input should be greater than 0 (got 0)",
    ),
    (
        "seeds: [0, 1]",
        "seeds: [0, 1]\ndefenses: {profile_classifier: {planted: [revadv]}}",
        "defenses.profile_classifier.planted.0: Input should be 'random', 'bandwagon' or 'popular' (got 'revadv')",
    ),
    (
        "seeds: [0, 1]",
        "seeds: [0, 1]\ncolumns: [bpr+pcaa]\ndefenses: {pca: {}}",
        "columns.0: unknown defense 'pcaa' in 'bpr+pcaa'; registered: ",
    ),
    (
        "seeds: [0, 1]",
        "seeds: [0, 1]\ncolumns: [bpr+spectral]\ndefenses: {pca: {}}",
        "columns.0: defense 'spectral' is not configured under defenses (pca)",
    ),
    (
        "seeds: [0, 1]",
        "seeds: [0, 1]\ncolumns: [bpr+apr+pca]\ndefenses: {pca: {}, apr: {}}",
        "columns.0: in 'bpr+apr+pca' the data defense 'pca' comes after the training defense 'apr'; order a chain data, training, deployment",
    ),
    (
        "seeds: [0, 1]",
        "seeds: [0, 1]\ncolumns: [bpr+apr+sam]\ndefenses: {sam: {}, apr: {}}",
        "columns.0: 'bpr+apr+sam' has training defenses apr, sam; a victim is fit with one",
    ),
    (
        "seeds: [0, 1]",
        "seeds: [0, 1]\ncolumns: [bpr+pca+pca]\ndefenses: {pca: {}}",
        "columns.0: 'bpr+pca+pca' repeats defense 'pca'",
    ),
    (
        "seeds: [0, 1]",
        "seeds: [0, 1]\ncolumns: [bpr+jpeg]\ndefenses: {jpeg: {}}",
        "columns.0: 'jpeg' is a deployment defense; this study places data and training defenses",
    ),
    (
        "  bpr: {dim: 8, epochs: 2, lr: 0.01, batch_size: 256, backend: memory}",
        "  bpr: {dim: 8, epochs: 2, lr: 0.01, batch_size: 256, backend: memory}\n  neumf: {dim: 8}\ncolumns: [neumf+spectral]\ndefenses: {spectral: {}}",
        "columns.0: defense 'spectral' cannot be applied to victim 'neumf'; it supports bpr, lightgcn, sgl, simgcl, wrmf",
    ),
    (
        "  - {name: random}",
        "  - {name: random, penalty: {detector: pca}}",
        "attacks.0.penalty: random is not a gradient attack; a penalty needs one",
    ),
    (
        "  - {name: random}",
        "  - {name: revadv, penalty: {detector: fap}}",
        "attacks.0.penalty.detector: 'fap' has no differentiable score; a penalty takes pca",
    ),
    ("seeds: [0, 1]", "seeds: [0, 1]\nscenario: poisonning", "scenario: unknown scenario 'poisonning'; registered: "),
    (
        "  synthetic: {n_users: 150,",
        "  synthetic: {n_user: 150,",
        "dataset.synthetic.n_user: unknown key; valid keys: ",
    ),
    (
        "  synthetic: {n_users: 150, n_items: 80, avg_degree: 10, image_size: 0, seed: 2}",
        "  path: /nonexistent/ds",
        "dataset.path: /nonexistent/ds is not a prepared dataset",
    ),
    (
        "  synthetic: {n_users: 150, n_items: 80, avg_degree: 10, image_size: 0, seed: 2}",
        "  {format: ml-100k, root: /nonexistent}",
        "dataset.root: '/nonexistent' does not exist",
    ),
]


@pytest.mark.parametrize("old,new,message", BAD_CONFIGS, ids=[m.split(":")[0] for _, _, m in BAD_CONFIGS])
def test_every_config_error_names_file_and_key_before_ray_starts(tmp_path, old, new, message):
    import ray

    path = tmp_path / "study.yaml"
    assert old in STUDY
    path.write_text(STUDY.replace(old, new))
    started = ray.is_initialized()
    with pytest.raises(ConfigError) as err:
        load_study(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value), str(err.value)
    assert ray.is_initialized() == started  # nothing was started to find the problem


def test_a_data_error_stops_the_study_before_ray_starts(tmp_path, monkeypatch):
    import distrec.study.runner as runner

    started = []
    monkeypatch.setattr(runner, "init_ray", lambda **kw: started.append(kw))
    path = tmp_path / "study.yaml"
    path.write_text(
        STUDY.replace("image_size: 0, seed: 2}", "image_size: 0, seed: 2}\n  prepare: {implicit_threshold: 100}")
    )
    with pytest.raises(ConfigError, match="implicit_threshold=100.0 and kcore=0 leave none"):
        run_study(path, str(tmp_path / "out"), progress=False)
    assert started == []  # the data was read and refused before any Ray work


def test_the_cli_prints_a_config_error_without_a_traceback(tmp_path, capsys):
    from distrec.cli import main

    path = tmp_path / "study.yaml"
    path.write_text(STUDY.replace("  wrmf: {factors: 8, iterations: 4}", "  wrmf: {factorz: 8}"))
    assert main(["study", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{path}: victims.wrmf.factorz: unknown key" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_study_on_a_file_uri_with_a_defended_column(ray_session, tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(
        STUDY.replace("seeds: [0, 1]", "seeds: [0]\ndefenses: {apr: {eps: 0.5, adv_reg: 1.0, warmup_epochs: 1}}")
    )
    out = f"file://{tmp_path}/uri-study"
    result = run_study(path, out, progress=False)
    _, rows = metrics_by_cell(str(tmp_path / "uri-study"))
    assert {r["column"] for r in rows} == {"wrmf", "bpr", "bpr+apr"} and result["cells"] == 9
    assert (tmp_path / "uri-study" / "matrix.md").exists() and (tmp_path / "uri-study" / "study.json").exists()
    plain = {r["row"]: r["recall@20"] for r in rows if r["column"] == "bpr"}
    defended = {r["row"]: r["recall@20"] for r in rows if r["column"] == "bpr+apr"}
    assert plain != defended  # APR changed how the column's victim was trained
    assert all(list(json.loads(r["config"])["defenses"]) == ["apr"] for r in rows if r["column"] == "bpr+apr")


@pytest.mark.slow
def test_study_on_a_simulated_three_node_cluster(study_file, tmp_path):
    result = run_on_three_nodes(study_file, str(tmp_path / "cluster"))
    assert result["cells_run"] == 12 and result["nodes"] == 3


@pytest.mark.slow
def test_stopping_the_driver_then_rerunning_skips_finished_cells(ray_session, tmp_path):
    import os
    import signal
    import time

    # cells long enough (a few seconds each) that the driver is stopped while most are still to run
    study_file = tmp_path / "slow.yaml"
    study_file.write_text(STUDY.replace("bpr: {dim: 8, epochs: 2,", "bpr: {dim: 8, epochs: 150,"))
    assert "epochs: 150" in study_file.read_text()
    out = tmp_path / "stopped"
    # the driver handles Ctrl-C even if this process ignores SIGINT (an ignored signal is inherited)
    script = f"import signal; signal.signal(signal.SIGINT, signal.default_int_handler); from distrec.study import run_study; run_study({str(study_file)!r}, {str(out)!r}, progress=False, num_cpus=2)"
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(list((out / "cell").glob("*.json"))) < 3 and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "the study finished before it could be stopped"
    os.kill(proc.pid, signal.SIGINT)  # Ctrl-C on the driver
    proc.wait(timeout=120)
    finished = {p.stem for p in (out / "cell").glob("*.json")}
    assert 3 <= len(finished) < 12
    result = run_study(study_file, str(out), progress=False)
    assert result["cells_skipped"] == len(finished) and result["cells_run"] == 12 - len(finished)
    reference = str(tmp_path / "reference")
    run_study(study_file, reference, progress=False)
    assert metrics_by_cell(str(out))[0] == metrics_by_cell(reference)[0]


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).resolve().parents[1] / "configs" / "study").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_shipped_study_config_is_valid(path, monkeypatch):
    """The study configs the README and docs name pass the whole check (keys, presets, metrics, columns)."""
    monkeypatch.chdir(path.parents[2])  # configs name ../shared/data relative to the checkout
    try:
        study = load_study(path)
    except ConfigError as exc:
        if "does not exist" in str(exc) and not (path.parents[3] / "shared" / "data").exists():
            pytest.skip(f"needs ../shared/data: {exc}")
        raise
    assert study.metric and study.stages


def test_the_protocol_line_states_the_threat_model_used_over_the_preset():
    """The demo's preset says 1% fake users; the study uses 2%, and its protocol line says so."""
    line = load_study(Path(__file__).resolve().parents[1] / "configs" / "study" / "demo.yaml").protocol()
    assert (
        "1% fake users" in line
        and "this study sets fake_ratio=0.02, n_targets=3" in line
        and "threat model used: {'fake_ratio': 0.02" in line
    )
