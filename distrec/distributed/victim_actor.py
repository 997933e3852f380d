"""A Ray actor that hosts victims: it receives datasets by reference through the object store, fits,
evaluates (clean and target metrics), and checkpoints each trained model to a storage URI, from which
a restarted actor resumes instead of training again."""

from __future__ import annotations

import os
import socket
import tempfile
import time

import numpy as np
import ray

from distrec.data.dataset import InMemoryDataset
from distrec.distributed import storage
from distrec.models import create_victim
from distrec.models.base import Victim
from distrec.workflows.attack import measure

CRASH_ENV = "DISTREC_FAULT_INJECTION_CELL"


class VictimHost:
    """Runs evaluation cells: ``run_cell(cell, data, targets, n_real)`` trains ``cell['victim']`` with
    ``cell['config']`` (seed included) on ``data`` and measures it. ``checkpoint_uri``: where each
    cell's trained model is kept (``<uri>/<cell id>``); a cell whose checkpoint exists is restored,
    not retrained. ``DISTREC_FAULT_INJECTION_CELL=<cell id>:<marker file>`` makes the process exit in
    the middle of that cell once (the marker records that it did), for reliability tests."""

    def __init__(self, checkpoint_uri: str | None = None):
        self.checkpoint_uri = checkpoint_uri

    def run_cell(self, cell: dict, data: InMemoryDataset, targets: list[int], n_real: int) -> dict:
        t0 = time.perf_counter()
        ckpt = f"{self.checkpoint_uri}/{cell['id']}" if self.checkpoint_uri else None
        restored = ckpt is not None and storage.exists(f"{ckpt}/config.json")
        if restored:
            with tempfile.TemporaryDirectory() as tmp:
                model = Victim.load(storage.download(ckpt, tmp))
        else:
            model = create_victim(cell["victim"], data.n_users, data.n_items, **cell["config"])
            model.fit(data, progress=False)
            if ckpt is not None:
                with tempfile.TemporaryDirectory() as tmp:
                    storage.upload(model.save(tmp), ckpt)
            self._maybe_crash(cell["id"])
        fit_seconds = time.perf_counter() - t0
        metrics = measure(model, data, np.asarray(targets), n_real)
        return {
            **{k: v for k, v in cell.items() if k != "config"},
            "config": cell["config"],
            "metrics": metrics,
            "fit_seconds": round(fit_seconds, 3),
            "cell_seconds": round(time.perf_counter() - t0, 3),
            "restored": restored,
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }

    @staticmethod
    def _maybe_crash(cell_id: str) -> None:
        spec = os.environ.get(CRASH_ENV, "")
        target, _, marker = spec.partition(":")
        if target == cell_id and marker and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)


def victim_actor(num_cpus: float = 1, num_gpus: float = 0, checkpoint_uri: str | None = None, max_restarts: int = 3):
    """A :class:`VictimHost` actor with the given resources that Ray restarts after a crash (its
    in-flight cell is retried and resumes from the cell's checkpoint when one was written)."""
    env = {CRASH_ENV: os.environ[CRASH_ENV]} if os.environ.get(CRASH_ENV) else {}
    cls = ray.remote(VictimHost).options(
        num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=max_restarts, max_task_retries=max_restarts, runtime_env={"env_vars": env} if env else None
    )
    return cls.remote(checkpoint_uri)
