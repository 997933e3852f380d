"""A watchdog that removes the processes of a local Ray session when the driver that started it is gone,
however it ended (an exception, SIGTERM, SIGKILL, an out-of-memory kill).

``start(pid)`` spawns ``python -m distrec.distributed.reaper PID``: it records the driver's descendants
(the GCS, the raylet, the dashboard and runtime-env agents, the workers) every half second while the
driver lives, then terminates those that are still running (a ``kill`` after 5 seconds)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time

import psutil


def start(driver_pid: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "distrec.distributed.reaper", str(driver_pid)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # not in the driver's process group: a Ctrl-C or group kill leaves it to clean up
    )


def watch(driver_pid: int, interval: float = 0.5) -> list[int]:
    """Wait for the driver to end, then end every process it had started; returns their pids."""
    try:
        driver = psutil.Process(driver_pid)
    except psutil.NoSuchProcess:
        return []
    known: dict[int, psutil.Process] = {}
    while True:
        try:
            if driver.status() == psutil.STATUS_ZOMBIE:
                break
            for p in driver.children(recursive=True):
                known.setdefault(p.pid, p)
        except psutil.NoSuchProcess:
            break
        time.sleep(interval)
    alive = []
    for p in list(known.values()):
        try:
            if p.is_running():  # is_running checks the create time: a reused pid is not ours
                alive += [p, *p.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    alive = [p for p in {p.pid: p for p in alive}.values() if p.pid != psutil.Process().pid]
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, rest = psutil.wait_procs(alive, timeout=5)
    for p in rest:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    return [p.pid for p in alive]


if __name__ == "__main__":
    watch(int(sys.argv[1]))
