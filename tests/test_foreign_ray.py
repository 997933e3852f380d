"""A Ray head already running on the machine is not joined by a distrec command unless the command is told to
(``--address`` or ``RAY_ADDRESS``): ``ray.init()`` alone would join it through /tmp/ray/ray_current_cluster."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

RAY = Path(sys.executable).with_name("ray")
SCRIPT = """
import sys, ray
from distrec.cli import main
code = main(sys.argv[1:])
print("GCS", ray.get_runtime_context().gcs_address if ray.is_initialized() else None, code)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


@pytest.fixture
def foreign_head(tmp_path):
    port = free_port()
    with open(tmp_path / "head.log", "w") as log:
        head = subprocess.Popen(
            [str(RAY), "start", "--head", "--num-cpus=1", f"--port={port}", "--include-dashboard=false",
             "--disable-usage-stats", "--block"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    current = Path("/tmp/ray/ray_current_cluster")
    try:
        deadline = time.time() + 120
        while not (current.exists() and current.read_text().strip().endswith(f":{port}")):
            if head.poll() is not None or time.time() > deadline:
                pytest.skip(f"a Ray head could not be started here: {(tmp_path / 'head.log').read_text()[-300:]}")
            time.sleep(0.5)
        yield current.read_text().strip()
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(head.pid, sig)
                head.wait(timeout=20)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue


def run_train(dataset, *flags) -> str:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    argv = [*flags, "train", "wrmf", "--data", dataset.uri, "--set", "factors=4", "--set", "iterations=1"]
    argv += ["--eval-shards", "2", "--num-cpus", "1", "--json"]
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *argv], capture_output=True, text=True, env=env, timeout=300)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("GCS ")]
    assert line, proc.stderr[-2000:]
    gcs, code = line[-1].split()[1:]
    assert code == "0", proc.stderr[-2000:]
    return gcs


@pytest.mark.slow
def test_a_command_starts_its_own_ray_beside_a_running_head_and_joins_it_only_when_told(
    foreign_head, synthetic_dataset
):
    own = run_train(synthetic_dataset)
    assert own not in ("None", foreign_head)  # its own local Ray, not the head's
    assert run_train(synthetic_dataset, "--address", foreign_head) == foreign_head
