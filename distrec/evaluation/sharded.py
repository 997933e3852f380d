"""Full-ranking evaluation sharded over user blocks: each block of whole ``chunk_users`` chunks is scored by
a Ray task (the model shipped once through the object store) or by a :class:`VictimHost` actor, and the
chunks' partial sums are added in user order, so the metrics equal :func:`full_ranking_metrics`' to the last
digit whatever the number of shards."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import ray
import torch

from distrec.data.matrix import UserItemCSR
from distrec.metrics.ranking import combine_sums, evaluated_users, ranking_sums


def user_blocks(users: np.ndarray, shards: int, chunk_users: int) -> list[np.ndarray]:
    """``users`` in at most ``shards`` contiguous blocks, each a whole number of ``chunk_users`` chunks
    (the last block may end in a partial chunk), as even as whole chunks allow."""
    n_chunks = -(-len(users) // chunk_users)
    bounds = np.linspace(0, n_chunks, min(shards, max(n_chunks, 1)) + 1).round().astype(int) * chunk_users
    return [users[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if a < len(users)]


@ray.remote
def _block_sums(model, train, test, users, ks, chunk_users, threads) -> list[dict[str, float]]:
    torch.set_num_threads(max(1, threads))
    with torch.no_grad():
        return ranking_sums(model.eval().score, train, test, users, ks, chunk_users)


def sharded_full_ranking_metrics(
    model,
    train: UserItemCSR,
    test: UserItemCSR,
    ks: Sequence[int] = (10, 20),
    shards: int = 2,
    chunk_users: int = 1024,
    num_cpus: float = 1,
    hosts: Sequence | None = None,
) -> dict[str, float]:
    """:func:`distrec.metrics.ranking.full_ranking_metrics` of ``model`` with the users in ``shards`` blocks,
    each a Ray task of ``num_cpus`` CPUs; with ``hosts`` (``VictimHost`` handles of this model) the blocks go to
    the hosts in turn instead and ``model`` may be None. Ray must be initialised."""
    users = evaluated_users(test)
    blocks = user_blocks(users, shards, chunk_users)
    train_ref, test_ref = ray.put(train), ray.put(test)
    if hosts:
        refs = [
            hosts[i % len(hosts)].ranking_sums.remote(train_ref, test_ref, block, tuple(ks), chunk_users)
            for i, block in enumerate(blocks)
        ]
    else:
        model_ref = ray.put(model)
        task = _block_sums.options(num_cpus=num_cpus)
        refs = [
            task.remote(model_ref, train_ref, test_ref, block, tuple(ks), chunk_users, int(num_cpus))
            for block in blocks
        ]
    chunks = [chunk for block in ray.get(refs) for chunk in block]
    return combine_sums(chunks, len(users), ks)
