"""The item_image scenario: poster attacks crafted on one visually-aware victim, uploaded to others
behind each deployed defense."""

import json

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import run_on_three_nodes

from distrec.config import ConfigError
from distrec.study import load_study, run_study

STUDY = {
    "scenario": "item_image",
    "image_size": 16,
    "encoder": {"backbone": "test_resnet", "feature_dim": 16, "epochs": 1, "batch_size": 64},
    "victims": {
        "vbpr": {"epochs": 3, "lr": 0.01, "batch_size": 256, "backend": "memory"},
        "amr": {"epochs": 3, "lr": 0.01, "batch_size": 256, "backend": "memory", "adv_start": 1},
    },
    "surrogates": ["vbpr"],
    "defenses": {"bit_depth": {"bits": 3}, "vit_detector": {}},
    "vit": {
        "model": "test_vit",
        "patch_size": 4,
        "depth": 1,
        "detector_depth": 1,
        "decoder_depth": 1,
        "attack_steps": 1,
        "epochs": 2,
        "batch_size": 32,
    },
    "n_targets": 4,
    "target_bucket": "any",
    "methods": ["pgd"],
    "eps": [16],
    "pgd_steps": 4,
    "adaptive_eps": 16,
    "vit_train_items": 60,
    "detection_items": 30,
}


def write(tmp_path, data, **changes):
    path = tmp_path / "images.yaml"
    path.write_text(yaml.safe_dump(dict(STUDY, dataset={"path": data}, **changes)))
    return path


@pytest.mark.slow
def test_item_image_transfer_matrix(ray_session, synthetic_dataset, tmp_path):
    path = write(tmp_path, synthetic_dataset.uri)
    out = tmp_path / "out"
    result = run_study(path, str(out), progress=False)
    rows = {(r["row"], r["column"]): r for r in pq.read_table(out / "results.parquet").to_pylist()}
    columns = {"vbpr", "vbpr+bit_depth", "vbpr+vit_detector", "amr", "amr+bit_depth", "amr+vit_detector"}
    assert {c for _, c in rows} == columns
    pgd, clean = "pgd eps=16/255 @vbpr", "no attack"
    assert {r for r, _ in rows} == {clean, pgd, "pgd_adaptive eps=16/255 @vbpr"}
    assert all((pgd, c) in rows for c in columns)  # crafted on vbpr, measured on every column
    assert rows[pgd, "vbpr"]["t_hr@10"] > rows[clean, "vbpr"]["t_hr@10"]  # the white-box attack lifts the targets
    assert rows[pgd, "vbpr"]["mean_rank"] < rows[clean, "vbpr"]["mean_rank"]
    assert rows[pgd, "amr"]["t_hr@10"] != rows[pgd, "vbpr"]["t_hr@10"]  # another victim, another number
    assert all(rows[clean, c]["recall@20"] > 0 for c in columns)
    assert ("pgd_adaptive eps=16/255 @vbpr", "vbpr") not in rows  # the adaptive attack exists behind a defense only
    flagged = json.loads(pq.read_table(out / "results.parquet").to_pylist()[0]["config"])
    assert "defense" in flagged
    detection = result["summary"]["detection"]
    assert set(detection) == {"pgd/16/auc", "pgd/16/accuracy"} and 0 <= detection["pgd/16/auc"] <= 1
    assert json.loads((out / "study.json").read_text())["summary"] == result["summary"]
    again = run_study(path, str(out), progress=False)
    assert all(c["run"] == 0 for c in again["stages"].values())
    cluster = run_on_three_nodes(path, f"file://{tmp_path}/cluster")  # 3 nodes, a file:// URI
    assert cluster["nodes"] == 3 and cluster["cells_run"] == len(rows)
    on_cluster = {
        (r["row"], r["column"]): r for r in pq.read_table(tmp_path / "cluster" / "results.parquet").to_pylist()
    }
    assert {k: r["mean_rank"] for k, r in on_cluster.items()} == pytest.approx(
        {k: r["mean_rank"] for k, r in rows.items()}
    )


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"victims": {"bpr": {}}}, "victims.bpr: not a visually-aware victim"),
        ({"victims": {"vbpr": {"encoder": "x"}}}, "victims.vbpr: encoder and image_size are set by the study"),
        (
            {"defenses": {"apr": {}}},
            "defenses.apr: unknown image defense; registered: bit_depth, jpeg, median, vit_detector",
        ),
        (
            {"defenses": {"jpeg": {"quality": 0}}},
            "defenses.jpeg.quality: Input should be greater than or equal to 1 (got 0)",
        ),
        ({"vit": {"depht": 1}}, "vit.depht: unknown key; valid keys: "),
        ({"eps": [300]}, "eps.0: Input should be less than or equal to 255 (got 300)"),
        ({"methods": ["cw"]}, "methods.0: Input should be 'fgsm' or 'pgd' (got 'cw')"),
        ({"surrogates": ["deepstyle"]}, "surrogates.0: 'deepstyle' is not one of the victims (amr, vbpr)"),
    ],
)
def test_item_image_config_errors(tmp_path, synthetic_dataset, changes, message):
    path = write(tmp_path, synthetic_dataset.uri, **changes)
    with pytest.raises(ConfigError) as err:
        load_study(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value), str(err.value)
