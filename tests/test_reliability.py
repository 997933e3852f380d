"""Nothing lost, nothing stale, nothing hangs: atomic writes, content ids that cover every input,
unusable stored files recomputed, checks before Ray starts, one-line errors."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from distrec.cli import main
from distrec.config import ConfigError, load_yaml
from distrec.data.dataset import PreparedDataset, write_prepared
from distrec.data.schema import SCHEMA_VERSION
from distrec.distributed import storage
from distrec.study import run_study
from distrec.study.runner import study_from_dict

STUDY = {
    "dataset": {"synthetic": {"n_users": 150, "n_items": 80, "avg_degree": 10, "image_size": 0, "seed": 2}},
    "threat": {"n_fake": 4, "n_targets": 2, "target_bucket": "torso", "seed": 0},
    "surrogates": {"wrmf": {"factors": 8, "iterations": 3}},
    "attacks": [{"name": "random"}, {"name": "revadv", "config": {"outer_steps": 1, "lr": 2.0}}],
    "victims": {
        "wrmf": {"factors": 8, "iterations": 4},
        "bpr": {"dim": 8, "epochs": 2, "lr": 0.01, "batch_size": 256, "backend": "memory"},
    },
    "defenses": {"apr": {"eps": 0.5, "adv_reg": 1.0, "warmup_epochs": 1}},
    "columns": ["wrmf", "bpr", "bpr+apr"],
    "seeds": [0],
    "resources": {"craft": {"num_cpus": 1}, "cell": {"num_cpus": 1}},
}


def write_study(tmp_path, study=None, name="study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(study or STUDY))
    return path


def matrix_values(out) -> dict:
    return {
        (r["row"], r["column"], r["seed"]): r["metrics"] for r in pq.read_table(f"{out}/results.parquet").to_pylist()
    }


# ---------------------------------------------------------------------------------------------- atomic writes
def small_tables(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "train": pa.table({"user_id": rng.integers(0, 9, 50), "item_id": rng.integers(0, 9, 50)}),
        "user_map": pa.table({"internal": np.arange(9)}),
    }


def test_a_failed_re_prepare_keeps_the_old_dataset_and_the_next_one_succeeds(tmp_path, monkeypatch):
    out = tmp_path / "ds"
    old = write_prepared(small_tables(0), {"schema_version": SCHEMA_VERSION, "name": "a", "format": "t"}, out)
    before = old.table("train")
    real = pq.write_table
    calls = []

    def disk_full(table, where, **kw):
        calls.append(where)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(table, where, **kw)

    monkeypatch.setattr(pq, "write_table", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_prepared(small_tables(1), dict(old.metadata, name="b"), out)
    monkeypatch.setattr(pq, "write_table", real)
    kept = PreparedDataset(out)  # the old dataset, whole
    assert kept.metadata["name"] == "a" and kept.table("train").equals(before)
    new = write_prepared(small_tables(1), dict(old.metadata, name="b"), out)  # the folder is not refused
    assert new.metadata["name"] == "b" and not new.table("train").equals(before)
    referenced = {t["file"] for t in new.metadata["tables"].values()}
    assert {p.name for p in out.glob("*.parquet")} - referenced <= {
        Path(c).name for c in calls
    }  # the old tables are gone
    assert new.content_id != old.content_id


def test_a_folder_left_by_an_interrupted_first_prepare_is_written_but_a_foreign_folder_is_refused(tmp_path):
    meta = {"schema_version": SCHEMA_VERSION, "name": "a", "format": "t"}
    half = tmp_path / "half"
    half.mkdir()
    pq.write_table(small_tables(0)["train"], half / "train.parquet")  # no metadata.json: the crash came before it
    assert write_prepared(small_tables(1), meta, half).table("train").equals(small_tables(1)["train"])
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a distrec dataset"):
        write_prepared(small_tables(1), meta, foreign)


def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary(tmp_path):
    from distrec.files import atomic_write, resolve_uri

    target = tmp_path / "result.json"
    storage.write_text(str(target), '{"v": 1}')

    def torn(fh):
        fh.write(b'{"v": 2')
        raise OSError("crash")

    fs, path = resolve_uri(target)
    with pytest.raises(OSError, match="crash"):
        atomic_write(fs, path, torn)
    assert json.loads(target.read_text()) == {"v": 1} and [p.name for p in tmp_path.iterdir()] == ["result.json"]


# ---------------------------------------------------------------------------------------------- content ids
def unit_ids(config: dict, store: str) -> dict[tuple[str, str], str]:
    scenario = study_from_dict(config, "test")
    return {(u.stage, u.label): u.id for u in scenario.plan(store)}


def changed(config: dict, path: str, value) -> dict:
    from distrec.study.sweep import set_path

    return set_path(config, path, value)


# (key path, new value, the units whose ids must change: a predicate on (stage, label))
ONE_KEY_CHANGES = [
    ("dataset.synthetic.seed", 7, lambda s, lab: True),
    ("dataset.synthetic.n_items", 81, lambda s, lab: True),
    ("dataset.prepare", {"test_ratio": 0.3}, lambda s, lab: True),
    ("threat.seed", 1, lambda s, lab: True),
    ("threat.n_fake", 5, lambda s, lab: lab != "no attack" and not lab.startswith("no attack |")),
    ("surrogates.wrmf.factors", 9, lambda s, lab: "revadv" in lab),
    ("surrogates.wrmf.seed", 7, lambda s, lab: "revadv" in lab),
    ("attacks.1.config.lr", 3.0, lambda s, lab: "revadv" in lab),
    ("victims.bpr.epochs", 3, lambda s, lab: s == "cell" and "| bpr" in lab),
    ("victims.wrmf.factors", 9, lambda s, lab: s == "cell" and "| wrmf |" in lab),
    ("defenses.apr.eps", 0.25, lambda s, lab: s == "cell" and "bpr+apr" in lab),
]


@pytest.mark.parametrize("path,value,affected", ONE_KEY_CHANGES, ids=[c[0] for c in ONE_KEY_CHANGES])
def test_changing_one_key_changes_exactly_the_ids_of_the_units_it_affects(tmp_path, path, value, affected):
    store = str(tmp_path / "store")
    base = unit_ids(STUDY, store)
    new = unit_ids(changed(STUDY, path, value), store)
    assert set(base) == set(new)
    moved = {k for k in base if base[k] != new[k]}
    expected = {k for k in base if affected(*k)}
    assert moved == expected, f"{path}: changed {sorted(moved)}, expected {sorted(expected)}"


def leaves(config, prefix=""):
    """(dotted path, value) of every scalar in a config."""
    if isinstance(config, dict):
        return [leaf for k, v in config.items() for leaf in leaves(v, f"{prefix}{k}.")]
    if isinstance(config, list):
        return [leaf for i, v in enumerate(config) for leaf in leaves(v, f"{prefix}{i}.")]
    return [(prefix.rstrip("."), config)]


def perturbed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 1.5
    return {"torso": "head", "memory": "ray", "random": "bandwagon"}.get(value)


SCHEDULING_ONLY = ("resources.",)  # where a unit runs, not what it computes


@pytest.mark.parametrize(
    "path,value", [leaf for leaf in leaves(STUDY) if perturbed(leaf[1]) is not None], ids=lambda x: str(x)
)
def test_every_config_key_moves_some_unit_id_unless_it_only_schedules(tmp_path, path, value):
    """Generated: each scalar of the study config changed alone; a key that changes results must change
    at least one unit's id, a scheduling key none."""
    store = str(tmp_path / "store")
    base = unit_ids(STUDY, store)
    new = unit_ids(changed(STUDY, path, perturbed(value)), store)
    moved = {k for k in base.keys() | new.keys() if base.get(k) != new.get(k)}
    assert bool(moved) != path.startswith(SCHEDULING_ONLY), (
        f"{path}: {value!r} -> {perturbed(value)!r} moved {len(moved)} unit ids"
    )


def test_a_new_science_version_moves_every_unit_id(tmp_path, monkeypatch):
    from distrec.study.scenarios.poisoning import Poisoning

    store = str(tmp_path / "store")
    base = unit_ids(STUDY, store)
    monkeypatch.setattr(Poisoning, "version", Poisoning.version + 1)
    new = unit_ids(STUDY, store)
    assert base.keys() == new.keys() and all(base[k] != new[k] for k in base)


def test_a_new_seed_adds_units_and_keeps_the_others(tmp_path):
    store = str(tmp_path / "store")
    base = unit_ids(STUDY, store)
    more = unit_ids(dict(STUDY, seeds=[0, 1]), store)
    assert all(more[k] == v for k, v in base.items()) and len(more) > len(base)


def test_a_changed_synthetic_seed_reruns_every_cell_into_the_same_folder(ray_session, tmp_path, capsys):
    small = dict(STUDY, attacks=[{"name": "random"}], columns=["wrmf"])
    out = str(tmp_path / "out")
    first = run_study(write_study(tmp_path, small), out, progress=False)
    other = changed(small, "dataset.synthetic.seed", 7)
    second = run_study(write_study(tmp_path, other, "seven.yaml"), out, progress=False)
    assert first["cells_run"] == second["cells_run"] == 2 and second["cells_skipped"] == 0
    assert "differs in dataset.synthetic.seed" in capsys.readouterr().err
    assert json.loads(Path(out, "study.json").read_text())["config"]["dataset"]["synthetic"]["seed"] == 7
    assert len(list(Path(out, "data").iterdir())) == 2  # each spec prepared once, neither replaced


def test_a_study_of_another_scenario_is_not_written_into_the_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "study.json").write_text(json.dumps({"scenario": "ranking", "config_file": "rank.yaml"}))
    with pytest.raises(ConfigError, match="holds a ranking study"):
        run_study(write_study(tmp_path), str(out), progress=False)


def test_an_edited_source_file_is_prepared_again(tmp_path):
    from distrec.data.spec import DatasetSpec, spec_id

    root = tmp_path / "src"
    root.mkdir()
    (root / "u.data").write_text("1\t1\t5\t1\n")
    spec = DatasetSpec(format="ml-100k", root=str(root))
    before = spec_id(spec)
    (root / "u.data").write_text("1\t1\t5\t1\n2\t1\t4\t2\n")
    assert spec_id(spec) != before


# ---------------------------------------------------------------------------------------------- unusable stored files
def test_unusable_results_artifacts_and_checkpoints_are_recomputed_with_a_line(ray_session, tmp_path, capsys):
    out = tmp_path / "out"
    path = write_study(tmp_path, dict(STUDY, columns=["wrmf", "bpr"]))
    run_study(path, str(out), progress=False)
    reference = matrix_values(out)
    cells = sorted((out / "cell").glob("*.json"))
    cells[0].write_text(cells[0].read_text()[:40])  # a result torn by a crash
    craft = next(p for p in (out / "craft").glob("*.json") if "revadv" in p.read_text())
    (out / "craft" / craft.stem / "metadata.json").unlink()  # a craft whose poisoned data is gone
    ckpt = next(
        p for p in (out / "checkpoints").glob("*/model/model.safetensors") if p.parent.parent.name != cells[0].stem
    )
    ckpt.write_bytes(b"garbage, not a safetensors file")
    (
        out / "cell" / f"{ckpt.parent.parent.name}.json"
    ).unlink()  # its cell must restore it: the checkpoint is unreadable
    capsys.readouterr()
    again = run_study(path, str(out), progress=False)
    err = capsys.readouterr().err
    assert f"discarded {cells[0]}: unreadable JSON" in err
    assert f"discarded {craft}: its artifact" in err
    assert f"discarded {ckpt.parent}" in err and "retraining" in err
    assert again["stages"]["craft"]["run"] == 1 and again["cells_run"] >= 2
    assert matrix_values(out) == reference


# ---------------------------------------------------------------------------------------------- checked before work
def no_ray(monkeypatch):
    import distrec.study.runner as runner

    def refuse(**kw):
        raise AssertionError("Ray started before the config was checked")

    monkeypatch.setattr(runner, "init_ray", refuse)


@pytest.mark.parametrize(
    "num_cpus,resources,message",
    [
        (0, {}, "--num-cpus 0: a local Ray needs at least 1 CPU"),
        (1, {"cell": {"num_cpus": 2}}, "resources.cell.num_cpus: a cell unit needs 2 CPUs, more than --num-cpus 1"),
        (2, {"craft": {"num_gpus": 1}}, "resources.craft.num_gpus: a craft unit needs 1 GPUs"),
    ],
)
def test_resources_that_cannot_be_scheduled_are_errors_before_ray(tmp_path, monkeypatch, num_cpus, resources, message):
    if "gpus" in message and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    no_ray(monkeypatch)
    with pytest.raises(ConfigError) as err:
        run_study(write_study(tmp_path, dict(STUDY, resources=resources)), str(tmp_path / "out"), num_cpus=num_cpus)
    assert message in str(err.value)


def sweep_file(tmp_path, **changes) -> Path:
    sweep = {
        "study": STUDY,
        "search": {"defenses.apr.eps": {"type": "loguniform", "low": 0.05, "high": 2.0}},
        "objective": {"metric": "t_hr@20", "mode": "min"},
        "num_samples": 2,
        **changes,
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def test_a_sweep_whose_trials_and_units_cannot_both_be_scheduled_says_so(tmp_path, capsys):
    assert (
        main(["sweep", str(sweep_file(tmp_path, trial_cpus=0.5)), "--out", str(tmp_path / "o"), "--num-cpus", "1"]) == 2
    )
    err = capsys.readouterr().err
    assert (
        "resources.craft.num_cpus: a craft unit needs 1 CPUs beside the 1 CPUs that max_concurrent 2 trials of trial_cpus 0.5 hold"
        in err
    )
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_a_sweep_objective_naming_a_metric_no_cell_reports_is_a_config_error(tmp_path):
    from distrec.study.sweep import load_sweep

    with pytest.raises(
        ConfigError, match=r"objective.metric: the study's cells do not report 't_hr@21'; they report t_hr@10"
    ):
        load_sweep(sweep_file(tmp_path, objective={"metric": "t_hr@21"}))


def test_sweep_trial_folders_are_named_by_content_id():
    from distrec.study.sweep import trial_folder

    params = {"defenses.apr.eps": 0.3}
    assert trial_folder("o", params) == trial_folder("o", dict(params)) != trial_folder("o", {"defenses.apr.eps": 0.31})
    script = "from distrec.study.sweep import trial_folder; print(trial_folder('o', {'defenses.apr.eps': 0.3}))"
    other_process = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert other_process == trial_folder("o", params)  # Python's hash() is salted per process; a content id is not


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"group": {"attribute": "income", "value": 1}}, "group: "),
        ({"group": {"attribute": "segment", "value": 99}}, "group: no user of"),
        ({"targets": {"items": [5, 100000]}}, "targets: targets.items must be internal item ids in [0, "),
        ({"targets": {"per_category": 10000}}, "selects no target item"),
    ],
)
def test_backdoor_data_problems_are_found_before_ray(tmp_path, monkeypatch, changes, message):
    from test_backdoor import STUDY as BACKDOOR

    no_ray(monkeypatch)
    path = write_study(tmp_path, dict(BACKDOOR, **changes))
    with pytest.raises(ConfigError) as err:
        run_study(path, str(tmp_path / "out"), progress=False)
    assert message in str(err.value) and str(path) in str(err.value)


def test_duplicate_yaml_keys_are_refused_with_their_line(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("scenario: poisoning\nvictims:\n  wrmf: {factors: 8}\n  wrmf: {factors: 16}\n")
    with pytest.raises(ConfigError, match=r"dup.yaml:4:3: invalid YAML: duplicate key 'wrmf' \(first at line 3\)"):
        load_yaml(path)


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml")), ids=lambda p: str(p.name)
)
def test_no_shipped_config_repeats_a_key(path):
    load_yaml(path)


# ---------------------------------------------------------------------------------------------- one line, no traceback
def test_ordinary_failures_are_one_line_without_a_traceback(tmp_path, capsys, synthetic_dataset):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    study = write_study(tmp_path)
    garbage = tmp_path / "model"
    garbage.mkdir()
    (garbage / "config.json").write_text('{"name": "c2f2", "config": {}}')
    (garbage / "model.safetensors").write_bytes(b"\x00" * 64)
    (tmp_path / "bad.yaml").write_bytes(b"scenario: \xff\xfe\n")
    cases = [
        (["study", str(study), "--out", str(a_file)], f"--out {a_file} is a file; give a folder"),
        (["study", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "o")], "bad.yaml: not UTF-8 text"),
        (
            [
                "rank",
                "attack",
                "--model",
                str(garbage),
                "--data",
                str(synthetic_dataset.uri),
                "--attack",
                "CA+",
                "--eps",
                "0.01",
            ],
            f"{garbage}: not a readable distrec checkpoint",
        ),
        (["data", "info", str(tmp_path)], "is not a prepared distrec dataset"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_a_corrupt_dataset_metadata_is_located(tmp_path):
    (tmp_path / "metadata.json").write_text('{"schema_version": ')
    with pytest.raises(ValueError, match=r"metadata.json: unreadable dataset metadata"):
        PreparedDataset(tmp_path)


# ---------------------------------------------------------------------------------------------- nothing left running
def test_the_reaper_ends_what_a_killed_driver_started(tmp_path):
    from distrec.distributed import reaper

    driver = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"]
    )
    watcher = subprocess.Popen([sys.executable, "-m", "distrec.distributed.reaper", str(driver.pid)])
    import psutil

    deadline = time.time() + 30
    while time.time() < deadline and not psutil.Process(driver.pid).children():
        time.sleep(0.1)
    child = psutil.Process(driver.pid).children()[0]
    time.sleep(1.0)  # the watcher has seen the child
    driver.kill()
    driver.wait()
    watcher.wait(timeout=30)
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    assert reaper.watch(driver.pid) == []  # a driver already gone: nothing to do


def descendants(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def run_cli_killed(argv: list[str], out: Path, when, sig: int, timeout: float = 240) -> tuple[list, int]:
    """``distrec ARGV`` in a child process, sent ``sig`` once ``when(out)`` holds; returns the processes it
    had started (Ray's) and its exit code."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "distrec.cli", *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + timeout
    seen: dict[int, object] = {}
    while time.time() < deadline and proc.poll() is None and not when(out):
        seen.update({p.pid: p for p in descendants(proc.pid)})
        time.sleep(0.05)
    seen.update({p.pid: p for p in descendants(proc.pid)})
    if proc.poll() is None:
        os.kill(proc.pid, sig)
    return list(seen.values()), proc.wait(timeout=60)


def wait_gone(processes: list, timeout: float = 30) -> list:
    import psutil

    deadline = time.time() + timeout
    alive = processes
    while time.time() < deadline:
        alive = [p for p in alive if p.is_running() and _status(p) != psutil.STATUS_ZOMBIE]
        if not alive:
            break
        time.sleep(0.2)
    return alive


def _status(p) -> str:
    import psutil

    try:
        return p.status()
    except psutil.NoSuchProcess:
        return psutil.STATUS_ZOMBIE


@pytest.mark.slow
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGKILL"])
def test_ray_processes_the_cli_starts_are_gone_after_it_is_killed(tmp_path, signame):
    import signal

    out = tmp_path / "out"
    started = lambda o: (o / "cell").exists()  # noqa: E731  Ray is up and units are running
    processes, code = run_cli_killed(
        ["study", str(write_study(tmp_path)), "--out", str(out), "--num-cpus", "2"],
        out,
        started,
        getattr(signal, signame),
    )
    ray_processes = [p for p in processes if "reaper" not in command(p)]
    assert ray_processes, "the driver started no process"
    left = wait_gone(ray_processes)
    assert not left, [command(p)[:80] for p in left]
    assert code == (143 if signame == "SIGTERM" else -9)  # SIGTERM ends it as an exit, not an abort (134)


def command(p) -> str:
    import psutil

    try:
        return " ".join(p.cmdline())
    except psutil.Error:  # gone, or a zombie
        return ""


@pytest.mark.slow
def test_killing_the_driver_at_random_points_then_rerunning_gives_the_uninterrupted_matrix(ray_session, tmp_path):
    """20 SIGKILLs of a ``distrec study`` driver at random points (while it starts and prepares the data,
    after a random number of its units finished, while it writes the outputs); each time a rerun completes
    with the uninterrupted matrix. The drivers join the test's Ray (as a cluster job would), so a kill
    costs no cluster start-up."""
    import ray

    study = write_study(tmp_path, dict(STUDY, columns=["wrmf", "bpr"], seeds=[0, 1]))
    env = dict(os.environ, RAY_ADDRESS=ray.get_runtime_context().gcs_address)
    units = lambda out: len(list(out.glob("craft/*.json"))) + len(list(out.glob("cell/*.json")))  # noqa: E731

    def driver(out: Path, after_units: int | None = None, delay: float = 0.0) -> subprocess.Popen:
        """Run the driver; SIGKILL it ``delay`` seconds after ``after_units`` unit results exist (0: after its start)."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "distrec.cli", "study", str(study), "--out", str(out)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        reached = None
        while proc.poll() is None and after_units is not None:
            if reached is None and units(out) >= after_units:
                reached = time.perf_counter()
            if reached is not None and time.perf_counter() - reached >= delay:
                proc.kill()
                break
            time.sleep(0.01)
        proc.wait()
        return proc

    reference = tmp_path / "reference"
    proc = driver(reference)
    assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
    expected, total = matrix_values(reference), units(reference)
    rng = np.random.default_rng(0)
    phases = []
    for i in range(20):
        out = tmp_path / f"killed{i}"
        after, delay = int(rng.integers(0, total + 1)), float(rng.uniform(0, 3.0 if i % 5 == 0 else 0.3))
        driver(out, after, delay)
        phases.append((units(out), (out / "results.parquet").exists(), (out / "study.json").exists()))
        run_study(study, str(out), progress=False)
        assert matrix_values(out) == expected, f"kill {i} after {after} units and {delay:.2f}s: {phases[-1]}"
    assert len(set(phases)) >= 5, phases  # the kills landed in several phases of the study
