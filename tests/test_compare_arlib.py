"""The ARLib comparison job on a checkout laid out as ARLib leaves it (written here; nothing of ARLib is used),
and the SELFRec split format it reads."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from distrec.config import ConfigError
from distrec.data.dataset import prepare
from distrec.data.errors import DataFormatError
from distrec.data.preprocess import PrepareConfig
from distrec.data.readers import read_source
from distrec.study.runner import study_from_dict

JOB = Path(__file__).resolve().parents[1] / "jobs" / "compare_arlib.py"


@pytest.fixture(scope="module")
def job():
    spec = importlib.util.spec_from_file_location("compare_arlib", JOB)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_checkout(root: Path, n_items: int = 120) -> Path:
    """60 users x ``n_items`` items in SELFRec's layout, ARLib's target file, and one poisoned copy with 3 fake users."""
    rng = np.random.default_rng(0)
    clean = root / "data" / "clean" / "toy"
    clean.mkdir(parents=True)
    lines = {"train": [], "val": [], "test": []}
    for u in range(60):
        items = rng.choice(n_items, 12, replace=False)
        for k, i in enumerate(items):
            split = "test" if k == 0 else "val" if k == 1 else "train"
            lines[split].append(f"u{u} i{i} 1.0\n")
    for split, rows in lines.items():
        (clean / f"{split}.txt").write_text("".join(rows))
    (clean / "targetItem_unpopular_2.txt").write_text("'i5', 'i7'")
    poison = root / "data" / "poison" / "BandwagonAttack_toy_unpopular_2_0.05_2026" / "0"
    poison.mkdir(parents=True)
    fakes = "".join(f"fakeUser{60 + f} {i} 1.0\n" for f in range(3) for i in ("i5", "i7", "i1", f"i{10 + f}"))
    (poison / "train.txt").write_text("".join(lines["train"]) + fakes)
    return root


def test_the_selfrec_split_is_kept_as_given(tmp_path):
    root = write_checkout(tmp_path / "arlib") / "data" / "clean" / "toy"
    tables, meta = prepare(read_source("selfrec", root), PrepareConfig(), "selfrec")
    assert meta["split_method"] == "given"
    assert (tables["train"].num_rows, tables["valid"].num_rows, tables["test"].num_rows) == (600, 60, 60)
    (root / "test.txt").write_text("u1 i2\n")
    with pytest.raises(DataFormatError, match=r"test.txt:1: wrong field count"):
        read_source("selfrec", root)


def test_the_job_reads_arlibs_run_and_builds_a_study_on_its_split_and_budget(tmp_path, job):
    arlib = write_checkout(tmp_path / "arlib")
    inputs = job.arlib_inputs(arlib, "toy", None, 0)
    assert inputs["targets"] == ["i5", "i7"] and inputs["attack"] == "BandwagonAttack"
    profiles = job.fake_profiles(inputs)
    assert list(profiles) == ["fakeUser60", "fakeUser61", "fakeUser62"] and profiles["fakeUser61"][-1] == "i11"
    path = tmp_path / "profiles.txt"
    path.write_text("".join(" ".join(p) + "\n" for p in profiles.values()))
    study = job.comparison_study(inputs, path, profiles, ["wrmf"], [0])
    assert study["threat"]["n_fake"] == 3 and study["threat"]["n_filler"] == 4
    scenario = study_from_dict(study, "compare.yaml")
    crafts = {u.label for u in scenario.plan(str(tmp_path / "store")) if u.stage == "craft"}
    assert "arlib:BandwagonAttack" in crafts and "arlib_hr@50" in scenario.extra_metrics
    with pytest.raises(ConfigError, match="no data/clean/ml-1m/train.txt"):
        job.arlib_inputs(arlib, "ml-1m", None, 0)
    small = job.arlib_inputs(write_checkout(tmp_path / "small", n_items=40), "toy", None, 0)
    study = job.comparison_study(small, path, job.fake_profiles(small), ["wrmf"], [0])
    with pytest.raises(
        ConfigError, match=r"compare.yaml: dataset: \d+ items, fewer than the target metrics' largest K"
    ):
        study_from_dict(study, "compare.yaml").plan(str(tmp_path / "store2"))
    study = job.comparison_study(inputs, path, profiles, ["wrmf"], [0])
    study["attacks"][3]["config"] = {"select_k": 500}
    with pytest.raises(ConfigError, match=r"attacks.3.config.select_k: 500 exceeds the dataset's \d+ items"):
        study_from_dict(study, "compare.yaml").plan(str(tmp_path / "store"))


def test_the_numbers_arlib_printed_are_read_per_k(tmp_path, job):
    log = tmp_path / "arlib.log"
    block = "Top {k}\nHitRate : {h}\nPrecision : 0.1\nRecall : {r}\nNDCG : 0.2\n"
    log.write_text("run 0\n" + block.format(k=50, h=0.5, r=0.25) + "average\n" + block.format(k=50, h=0.4, r=0.2))
    assert job.arlib_printed(log) == {50: {"HitRate": 0.4, "Recall": 0.2}}
