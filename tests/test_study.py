"""Transferability studies on Ray: outputs, resume, a crashed victim actor, config errors, 3 nodes."""

import json
import subprocess
import sys
import textwrap

import pyarrow.parquet as pq
import pytest

from distrec.config import ConfigError
from distrec.distributed.victim_actor import CRASH_ENV
from distrec.workflows.study import load_study, run_study

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
resources: {actors: 2}
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
    assert (first["cells"], first["cells_run"], first["cells_skipped"], first["crafts_run"]) == (12, 12, 0, 2)
    metrics, rows = metrics_by_cell(out)
    assert {r["attack"] for r in rows} == {"no attack", "random", "revadv@wrmf"} and len(rows) == 12
    assert all(json.loads(r["config"])["seed"] == r["seed"] and r["host"] for r in rows)
    md = open(first["matrix_md"]).read()
    assert "| revadv@wrmf |" in md and "| wrmf | bpr |" in md
    assert open(first["heatmap_png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    again = run_study(study_file, out, progress=False)
    assert (again["cells_run"], again["cells_skipped"], again["crafts_run"]) == (0, 12, 0)
    # an interrupted study: two cells lost their results; rerunning computes only those, identically
    lost = [r["cell_id"] for r in rows[:2]]
    for cell in lost:
        (tmp_path / "run" / "cells" / f"{cell}.json").unlink()
    resumed = run_study(study_file, out, progress=False)
    assert resumed["cells_run"] == 2
    assert metrics_by_cell(out)[0] == metrics


def test_a_killed_victim_actor_does_not_change_the_study(ray_session, study_file, tmp_path, monkeypatch):
    reference = str(tmp_path / "ref")
    run_study(study_file, reference, progress=False)
    expected, rows = metrics_by_cell(reference)
    victim_cell = next(r["cell_id"] for r in rows if r["attack"] == "revadv@wrmf" and r["victim"] == "bpr")
    marker = tmp_path / "crashed"
    monkeypatch.setenv(CRASH_ENV, f"{victim_cell}:{marker}")
    out = str(tmp_path / "chaos")
    result = run_study(study_file, out, progress=False)
    assert marker.exists()  # the actor process did exit in the middle of that cell
    assert result["cells_run"] == 12 and metrics_by_cell(out)[0] == expected
    row = json.loads((tmp_path / "chaos" / "cells" / f"{victim_cell}.json").read_text())
    assert row["restored"] is True  # the restarted actor resumed from the cell's checkpoint


def test_study_config_errors_name_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(STUDY.replace("resources: {actors: 2}", "resources: {actor: 2}"))
    with pytest.raises(ConfigError, match=rf"{path}: key resources.actor"):
        load_study(path)
    path.write_text(STUDY.replace("seeds: [0, 1]", "seeds: [zero]"))
    with pytest.raises(ConfigError, match=r"key seeds.0"):
        load_study(path)
    path.write_text(STUDY.replace("  wrmf: {factors: 8, iterations: 4}", "  wrmff: {factors: 8}"))
    with pytest.raises(ValueError, match="unknown victim 'wrmff'"):
        load_study(path)


def test_study_on_a_simulated_three_node_cluster(study_file, tmp_path):
    """Runs in a subprocess: the cluster needs its own Ray, apart from the tests' shared session."""
    script = textwrap.dedent(
        f"""
        import json, ray
        from ray.cluster_utils import Cluster
        from distrec.workflows.study import run_study
        cluster = Cluster(initialize_head=True, head_node_args={{"num_cpus": 1}})
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, log_to_driver=False)
        try:
            result = run_study({str(study_file)!r}, {str(tmp_path / "cluster")!r}, progress=False)
            print(json.dumps({{"cells_run": result["cells_run"], "nodes": len([n for n in ray.nodes() if n["Alive"]])}}))
        finally:
            ray.shutdown()
            cluster.shutdown()
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"cells_run": 12, "nodes": 3}


def test_stopping_the_driver_then_rerunning_skips_finished_cells(ray_session, tmp_path):
    import os
    import signal
    import time

    # cells long enough (about a second each) that the driver is stopped while most are still to run
    study_file = tmp_path / "slow.yaml"
    study_file.write_text(STUDY.replace("bpr: {dim: 8, epochs: 2,", "bpr: {dim: 8, epochs: 40,"))
    assert "epochs: 40" in study_file.read_text()
    out = tmp_path / "stopped"
    script = f"from distrec.workflows.study import run_study; run_study({str(study_file)!r}, {str(out)!r}, progress=False, num_cpus=2)"
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(list((out / "cells").glob("*.json"))) < 3 and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "the study finished before it could be stopped"
    os.kill(proc.pid, signal.SIGINT)  # Ctrl-C on the driver
    proc.wait(timeout=120)
    finished = {p.stem for p in (out / "cells").glob("*.json")}
    assert 3 <= len(finished) < 12
    result = run_study(study_file, str(out), progress=False)
    assert result["cells_skipped"] == len(finished) and result["cells_run"] == 12 - len(finished)
    reference = str(tmp_path / "reference")
    run_study(study_file, reference, progress=False)
    assert metrics_by_cell(str(out))[0] == metrics_by_cell(reference)[0]
