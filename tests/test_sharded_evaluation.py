"""Sharded full-ranking evaluation (Ray tasks or victim-host actors) equals the one-pass evaluation exactly,
and a victim host that dies is restored from its checkpoint."""

import os
import signal

import numpy as np
import pytest
import ray
import torch

from distrec.data.matrix import UserItemCSR
from distrec.distributed.victim_host import VictimHost
from distrec.evaluation.sharded import sharded_full_ranking_metrics, user_blocks
from distrec.metrics.ranking import full_ranking_metrics
from distrec.models import create_victim


@pytest.fixture(scope="module")
def trained(synthetic_dataset, tmp_path_factory):
    data = synthetic_dataset
    model = create_victim("bpr", data.n_users, data.n_items, dim=16, epochs=3, batch_size=256, seed=3, backend="memory")
    model.fit(data, progress=False)
    model.eval()
    train = UserItemCSR.from_table(data.table("train"), data.n_users, data.n_items)
    test = UserItemCSR.from_table(data.table("test"), data.n_users, data.n_items)
    folder = model.save(tmp_path_factory.mktemp("victim") / "model")
    return model, train, test, str(folder)


def test_user_blocks_are_whole_chunks_covering_every_user_once():
    users = np.arange(103) * 2
    for shards in (1, 2, 3, 5, 40):
        blocks = user_blocks(users, shards, chunk_users=10)
        assert np.array_equal(np.concatenate(blocks), users)
        assert len(blocks) == min(shards, 11)
        assert all(len(b) % 10 == 0 for b in blocks[:-1])


@pytest.mark.parametrize("shards", [1, 2, 3])
def test_sharded_tasks_equal_one_pass_to_the_last_digit(ray_session, trained, shards):
    model, train, test, _ = trained
    one = full_ranking_metrics(model.score, train, test, (5, 20), chunk_users=32)
    sharded = sharded_full_ranking_metrics(model, train, test, (5, 20), shards=shards, chunk_users=32)
    assert sharded == one  # exact: the same chunks, added in the same order
    assert one["recall@20"] > 0


def test_victim_hosts_serve_the_same_numbers_and_survive_a_killed_process(ray_session, trained):
    model, train, test, folder = trained
    one = full_ranking_metrics(model.score, train, test, (10,), chunk_users=16)
    host = VictimHost.remote(folder)
    users = np.arange(5)
    assert np.allclose(ray.get(host.scores.remote(users)), model.score(torch.as_tensor(users)).detach())
    assert sharded_full_ranking_metrics(None, train, test, (10,), shards=4, chunk_users=16, hosts=[host]) == one
    before = ray.get(host.pid.remote())
    os.kill(before, signal.SIGKILL)
    # the restarted host reloads the checkpoint; the retried calls give the same answer
    assert sharded_full_ranking_metrics(None, train, test, (10,), shards=4, chunk_users=16, hosts=[host]) == one
    assert ray.get(host.pid.remote()) != before
    ray.kill(host)
