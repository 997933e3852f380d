"""A trained victim hosted in a Ray actor: loaded once from its checkpoint, it serves scores, top-k items
and full-ranking partial sums to the units that evaluate or attack it. Ray restarts a host whose process
dies, and the restarted host loads the checkpoint again, so a caller's retried call is answered as before.

Example::

    host = VictimHost.remote(f"{out}/checkpoints/{unit_id}/model", data_uri)
    top = ray.get(host.topk.remote(users, 50, train))
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import ray
import torch

from distrec.data.matrix import UserItemCSR
from distrec.distributed import storage
from distrec.metrics.ranking import ranking_sums


@ray.remote(max_restarts=3, max_task_retries=3)
class VictimHost:
    """``checkpoint_uri``: a folder written by ``Victim.save`` (local or any ``pyarrow.fs`` URI);
    ``data_uri``: the prepared dataset the victim was fit on, for victims that score with more than their
    weights (LightGCN's graph; see ``Victim.attach``); ``threads``: torch threads, the actor's CPUs."""

    def __init__(self, checkpoint_uri: str, data_uri: str | None = None, threads: int = 1):
        from distrec.data.dataset import PreparedDataset
        from distrec.models.base import Victim

        torch.set_num_threads(max(1, threads))
        with tempfile.TemporaryDirectory() as tmp:
            self.model = Victim.load(storage.download(checkpoint_uri, tmp)).eval()
        if data_uri is not None:
            self.model.attach(PreparedDataset(data_uri))

    @torch.no_grad()
    def scores(self, users: np.ndarray) -> np.ndarray:
        """Scores ``[len(users), n_items]``."""
        return self.model.score(torch.as_tensor(users)).float().numpy()

    def topk(self, users: np.ndarray, k: int, exclude: UserItemCSR | None = None) -> np.ndarray:
        """The ``k`` best items of each user, the user's items in ``exclude`` left out."""
        return self.model.topk(torch.as_tensor(users), k, exclude).numpy()

    def ranking_sums(
        self, train: UserItemCSR, test: UserItemCSR, users: np.ndarray, ks, chunk_users: int
    ) -> list[dict[str, float]]:
        """:func:`distrec.metrics.ranking.ranking_sums` of ``users``."""
        return ranking_sums(self.model.score, train, test, users, ks, chunk_users)

    def pid(self) -> int:
        return os.getpid()
