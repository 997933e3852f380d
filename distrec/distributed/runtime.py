"""Starting or joining Ray: the same call works on a laptop and inside a cluster job."""

from __future__ import annotations

import logging
import os
import signal

import ray

# set by the CLI: a local Ray it starts is removed by a watchdog process when the CLI exits, however it
# exits, and SIGTERM ends the CLI like an exit (Ray's core would otherwise abort the process on it)
CLI_PROCESS = {"active": False}


def exit_on_sigterm() -> None:
    """SIGTERM raises ``SystemExit(143)``: finally blocks run and Ray is shut down."""

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)


def init_ray(num_cpus: int | None = None, num_gpus: int | None = None, address: str | None = None) -> None:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``), else start a local Ray sized by the arguments
    (``address="local"``: never a cluster that happens to run on this machine).

    Does nothing when Ray is already initialised in this process.
    """
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        if CLI_PROCESS["active"]:
            from distrec.distributed import reaper

            reaper.start(os.getpid())
        ray.init(
            address="local",
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    if CLI_PROCESS["active"]:
        exit_on_sigterm()  # again: ray.init installs its core's handler, which aborts
    quiet_ray_data()


def quiet_ray_data() -> None:
    """Ray Data logs every execution at INFO; distrec reports its own progress instead."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
