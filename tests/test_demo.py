import json

import pytest

from distrec.data.dataset import PreparedDataset
from distrec.data.matrix import UserItemCSR
from distrec.metrics.ranking import full_ranking_metrics
from distrec.models import Victim
from distrec.workflows.demo import run_demo


def test_demo_end_to_end_through_ray_data(ray_session, tmp_path):
    result = run_demo(out=tmp_path / "demo", backend="ray", epochs=4, seed=0)
    saved = json.loads((tmp_path / "demo/result.json").read_text())
    assert saved["config"]["seed"] == 0 and saved["backend"] == "ray" and saved["config"]["epochs"] == 4
    assert saved["loss_first_last"][1] < saved["loss_first_last"][0]
    # the reported metrics are those of the saved checkpoint on the saved data
    ds = PreparedDataset(result["outputs"]["data"])
    model = Victim.load(result["outputs"]["model"])
    train = UserItemCSR.from_table(ds.table("train"), ds.n_users, ds.n_items)
    test = UserItemCSR.from_table(ds.table("test"), ds.n_users, ds.n_items)
    assert full_ranking_metrics(model.score, train, test, (20,))["recall@20"] == pytest.approx(
        saved["metrics"]["recall@20"], abs=1e-4
    )
