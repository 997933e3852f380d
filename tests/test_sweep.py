"""Sweeps of any study's keys: Ray Tune + OptunaSearch (TPE) + ASHA, an Optuna study in sqlite that
resumes, trials sharing one unit store, a clean-accuracy constraint."""

import optuna
import pytest
import yaml

from distrec.config import ConfigError
from distrec.study.sweep import load_sweep, run_sweep, score, set_path

BASE = {
    "scenario": "poisoning",
    "dataset": {"synthetic": {"n_users": 150, "n_items": 80, "avg_degree": 10, "image_size": 0, "seed": 2}},
    "threat": {"n_fake": 4, "n_targets": 2, "target_bucket": "torso", "seed": 0},
    "surrogates": {"wrmf": {"factors": 8, "iterations": 3}},
    "attacks": [{"name": "revadv", "config": {"outer_steps": 1, "lr": 2.0}}],
    "victims": {"bpr": {"dim": 8, "epochs": 3, "lr": 0.01, "batch_size": 256, "backend": "memory"}},
    "defenses": {"apr": {"eps": 0.5, "adv_reg": 1.0, "warmup_epochs": 1}},
    "columns": ["bpr", "bpr+apr"],
    "seeds": [0],
}
SWEEP = {
    "study": BASE,
    "search": {
        "defenses.apr.eps": {"type": "loguniform", "low": 0.05, "high": 2.0},
        "defenses.apr.adv_reg": {"type": "uniform", "low": 0.1, "high": 2.0},
    },
    "objective": {"metric": "t_hr@20", "mode": "min", "rows": ["revadv@wrmf"], "columns": ["bpr+apr"]},
    "constraint": {"metric": "recall@20", "column": "bpr+apr", "reference": "bpr", "max_drop": 0.5},
    "num_samples": 3,
    "max_concurrent": 2,
}


def write(tmp_path, sweep):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


@pytest.mark.slow
def test_a_defense_sweep_runs_shares_units_resumes_and_exports_the_best_study(ray_session, tmp_path):
    path = write(tmp_path, SWEEP)
    out = tmp_path / "out"
    result = run_sweep(path, out, progress=False)
    assert result["trials_run"] == 3 and len(result["trials"]) + result["trials_stopped_early"] == 3
    study = optuna.load_study(study_name="distrec-sweep", storage=f"sqlite:///{out / 'optuna.db'}")
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) == 3
    values = [t["objective"] for t in result["trials"]]  # only trials that ran every cell are ranked
    assert result["best"]["objective"] == min(values)
    for t in result["trials"]:
        assert 0.05 <= t["params"]["defenses.apr.eps"] <= 2.0
    best = yaml.safe_load((out / "best.yaml").read_text())
    best_params = result["trials"][[t["objective"] for t in result["trials"]].index(min(values))]["params"]
    assert best["defenses"]["apr"]["eps"] == best_params["defenses.apr.eps"] and best["attacks"] == BASE["attacks"]
    crafts = list((out / "units" / "craft").glob("*.json"))
    undefended = [p for p in (out / "units" / "cell").glob("*.json") if '"column": "bpr",' in p.read_text()]
    assert len(crafts) == 1 and len(undefended) == 2  # the attack and the undefended column: once for every trial
    again = run_sweep(path, out, progress=False)
    assert again["trials_run"] == 0 and again["trials_skipped"] == 3
    # extended by one trial: a new point, not the first trial's values drawn again by the same seed
    before = [t.params for t in study.trials]
    more = run_sweep(write(tmp_path, dict(SWEEP, num_samples=4)), out, progress=False)
    after = optuna.load_study(study_name="distrec-sweep", storage=f"sqlite:///{out / 'optuna.db'}").trials
    assert more["trials_run"] == 1 and len(after) == 4 and after[-1].params not in before


def test_the_constraint_makes_a_trial_the_worst():
    from distrec.study.sweep import Constraint, Objective, SweepConfig

    cfg = SweepConfig(
        study=BASE,
        search={},
        objective=Objective("t_hr@20", "min", ["a"], ["d"]),
        constraint=Constraint("recall@20", "d", "u", max_drop=0.1),
    )
    cell = lambda row, col, t, r: {"row": row, "column": col, "metrics": {"t_hr@20": t, "recall@20": r}}  # noqa: E731
    ok = [cell("a", "d", 0.1, 0), cell("no attack", "d", 0, 0.19), cell("no attack", "u", 0, 0.2)]
    assert score(cfg, ok) == (
        pytest.approx(0.1),
        {"value": 0.19, "reference": 0.2, "drop": pytest.approx(0.05), "ok": True},
    )
    broken = [cell("a", "d", 0.01, 0), cell("no attack", "d", 0, 0.1), cell("no attack", "u", 0, 0.2)]
    assert score(cfg, broken)[0] == 1e9
    points = SweepConfig(
        study=BASE,
        search={},
        objective=Objective("t_hr@20", "max"),
        constraint=Constraint("recall@20", "d", "u", max_drop=0.02, absolute=True),
    )
    assert score(points, ok)[1]["ok"] and score(points, ok)[1]["drop"] == pytest.approx(0.01)
    assert score(points, broken)[0] == -1e9  # 10 points below the reference: the worst for a maximised objective


def test_set_path_reaches_lists_and_new_keys():
    cfg = set_path(BASE, "attacks.0.config.lr", 4.0)
    assert cfg["attacks"][0]["config"]["lr"] == 4.0 and BASE["attacks"][0]["config"]["lr"] == 2.0
    assert set_path(BASE, "attacks.0.sharpap", {"rho": 0.1})["attacks"][0]["sharpap"] == {"rho": 0.1}


@pytest.mark.parametrize(
    "change,message",
    [
        (
            {"search": {"defenses.apr.eps": {"type": "gaussian", "low": 0, "high": 1}}},
            "search.defenses.apr.eps.type: 'gaussian' is not one of",
        ),
        (
            {"search": {"defenses.apr.eps": {"type": "uniform", "low": 1, "high": 0.5}}},
            "search.defenses.apr.eps: uniform needs low < high",
        ),
        (
            {"search": {"defenses.aprr.eps": {"type": "uniform", "low": 0.1, "high": 0.5}}},
            "search.defenses.aprr.eps: the study has no 'defenses.aprr'",
        ),
        (
            {"search": {"defenses.apr.eps": {"type": "uniform", "low": -1, "high": 0.5}}},
            "search.defenses.apr.eps=-1.0: ",
        ),
        (
            {"search": {"defenses.apr.epz": {"type": "uniform", "low": 0.1, "high": 0.5}}},
            "defenses.apr.epz: unknown key",
        ),
        ({"num_sample": 3}, "num_sample"),
    ],
)
def test_sweep_config_errors(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        load_sweep(write(tmp_path, dict(SWEEP, **change)))


def test_a_sweep_into_object_storage_needs_a_shared_optuna_database(tmp_path):
    with pytest.raises(ConfigError, match=r"sweep\.yaml: storage: a sweep whose --out is s3://bucket/sweep needs"):
        run_sweep(write(tmp_path, SWEEP), "s3://bucket/sweep", progress=False)
