"""The main job (``distrec demo`` = ``make demo``: the study of configs/study/demo.yaml), and MF-BPR trained on
batches streamed through Ray Data."""

import pytest

from distrec.cli import DEMO_STUDY, main
from distrec.data.matrix import UserItemCSR
from distrec.metrics.ranking import full_ranking_metrics
from distrec.models import Victim, create_victim


@pytest.mark.slow
def test_distrec_demo_runs_the_study_and_prints_its_matrix(ray_session, tmp_path, capsys):
    assert DEMO_STUDY.name == "demo.yaml" and main(["demo", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "| attack \\ victim | wrmf | bpr | bpr+apr | lightgcn | lightgcn+apr |" in out
    assert "50 cells run" in out and (tmp_path / "demo" / "heatmap.png").stat().st_size > 0


def test_mf_bpr_trained_on_ray_data_batches_learns_and_its_checkpoint_scores_the_same(
    ray_session, synthetic_dataset, tmp_path
):
    ds = synthetic_dataset
    model = create_victim("bpr", ds.n_users, ds.n_items, dim=16, epochs=4, lr=1e-2, batch_size=512, backend="ray")
    history = model.fit(ds, progress=False)
    assert history[-1]["loss"] < history[0]["loss"]
    train = UserItemCSR.from_table(ds.table("train"), ds.n_users, ds.n_items)
    test = UserItemCSR.from_table(ds.table("test"), ds.n_users, ds.n_items)
    model.save(tmp_path / "model")
    again = Victim.load(tmp_path / "model")
    assert full_ranking_metrics(again.score, train, test, (20,))["recall@20"] == pytest.approx(
        full_ranking_metrics(model.score, train, test, (20,))["recall@20"], abs=1e-6
    )
