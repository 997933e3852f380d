"""Starting or joining Ray: the same call works on a laptop and inside a cluster job."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

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
        join_cluster(address)
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


TOKEN_SOURCES = "RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token"


def has_auth_token() -> bool:
    """Whether this process holds a Ray authentication token (Ray looks in the same places)."""
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    default = Path.home() / ".ray" / "auth_token"
    return bool(os.environ.get("RAY_AUTH_TOKEN")) or Path(path or default).is_file()


def join_cluster(address: str) -> None:
    """Join the Ray cluster at ``address``. Ray (2.5x on) starts clusters with token authentication but
    sends a token to an address given explicitly only in ``RAY_AUTH_MODE=token``: that mode is set here when a
    token is at hand (it is harmless against a cluster without authentication), and a refused connection
    is one line saying where the token goes (docs/cli.md, "Joining a cluster")."""
    if "RAY_AUTH_MODE" not in os.environ and has_auth_token():
        os.environ["RAY_AUTH_MODE"] = "token"
        try:  # Ray reads its config once, at import: read it again so this process sends the token
            from ray._raylet import Config

            Config.initialize("")
        except (ImportError, AttributeError):  # another Ray: it reads the variable when it starts
            pass
    try:
        ray.init(address=address, log_to_driver=False)
    except ConnectionError as exc:
        hint = (
            f"a cluster with token authentication needs its token in {TOKEN_SOURCES}"
            if not has_auth_token()
            else "check the address, and that the token is the cluster's"
        )
        raise ClusterError(f"cannot join the Ray cluster at {address} ({exc}): {hint}") from exc


class ClusterError(ConnectionError):
    """The Ray cluster named by ``--address`` or ``RAY_ADDRESS`` cannot be joined."""


def quiet_ray_data() -> None:
    """Ray Data logs every execution at INFO; distrec reports its own progress instead."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
