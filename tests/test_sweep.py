"""Attack sweeps: Ray Tune + OptunaSearch (TPE) + ASHA, an Optuna study in sqlite that resumes."""

import optuna
import pytest
import yaml

from distrec.config import ConfigError
from distrec.workflows.sweep import attack_arguments, load_sweep, run_sweep

SWEEP = """
dataset:
  synthetic: {n_users: 150, n_items: 80, avg_degree: 10, image_size: 0, seed: 2}
attack: {name: revadv, sharpap: {rho: 0.05}, config: {outer_steps: 1}}
threat: {n_fake: 4, n_targets: 2, target_bucket: torso, seed: 0}
surrogate: {factors: 8, iterations: 3}
victims:
  wrmf: {factors: 8, iterations: 4}
search:
  rho: {type: loguniform, low: 0.01, high: 0.5}
  lr: {type: uniform, low: 1.0, high: 4.0}
seeds: [0, 1]
num_samples: 3
max_concurrent: 2
trial_cpus: 0.5
"""


def test_sweep_runs_resumes_and_exports_the_best_config(ray_session, tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP)
    out = tmp_path / "out"
    result = run_sweep(path, out, progress=False)
    assert result["trials_run"] == 3 and len(result["trials"]) == 3
    study = optuna.load_study(study_name="distrec-sweep", storage=f"sqlite:///{out / 'optuna.db'}")
    values = [t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(values) == 3 and result["best"]["objective"] == max(values)
    for t in result["trials"]:
        assert 0.01 <= t["params"]["rho"] <= 0.5 and 1.0 <= t["params"]["lr"] <= 4.0
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert (
        best["name"] == "revadv"
        and best["sharpap"] is True
        and best["config"]["rho"] == result["trials"][[t["objective"] for t in result["trials"]].index(max(values))]["params"]["rho"]
    )
    again = run_sweep(path, out, progress=False)
    assert again["trials_run"] == 0 and again["trials_skipped"] == 3


def test_population_size_builds_members_and_bad_dimensions_are_errors(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP)
    cfg = load_sweep(path)
    config, population, sharpap = attack_arguments(cfg, {"population_size": 3, "rho": 0.1})
    assert sharpap and [m["kind"] for m in population["members"]] == ["sam", "random", "random"]
    assert all(m["rho"] == 0.1 for m in population["members"]) and config["outer_steps"] == 1
    path.write_text(SWEEP.replace("type: uniform", "type: gaussian"))
    with pytest.raises(ConfigError, match="search.lr.type"):
        load_sweep(path)
    path.write_text(SWEEP.replace("num_samples: 3", "num_sample: 3"))
    with pytest.raises(ConfigError, match="num_sample"):
        load_sweep(path)
