"""The NCF leave-one-out format: the given split, its negatives as the test candidates, the ML-1M rebuild,
and every anomaly located or counted."""

import re
from dataclasses import asdict

import numpy as np
import pytest
import torch

from distrec.cli import main
from distrec.config import ConfigError
from distrec.content_id import content_id
from distrec.data.dataset import PreparedDataset, prepare, write_prepared
from distrec.data.errors import DataFormatError
from distrec.data.preprocess import PrepareConfig
from distrec.data.readers import read_source
from distrec.data.spec import DatasetSpec, _stamp, check_dataset_spec, materialise_dataset, spec_id
from distrec.metrics.sampled import candidates, sampled_metrics

N_USERS, N_ITEMS, NEG = 6, 12, 3


def write_ncf(folder, *, train=True, test_edit=None, neg_edit=None):
    """A small NCF-format dataset: user u rated items 2u..2u+3 (mod 12), its test item 2u+4; negatives 2u+6..2u+8."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [(u, (2 * u + k) % N_ITEMS, 4, 1000 * u + k) for u in range(N_USERS) for k in range(4)]
    test = [f"{u}\t{(2 * u + 4) % N_ITEMS}\t5\t{1000 * u + 9}" for u in range(N_USERS)]
    neg = [
        f"({u},{(2 * u + 4) % N_ITEMS})\t" + "\t".join(str((2 * u + 6 + k) % N_ITEMS) for k in range(NEG))
        for u in range(N_USERS)
    ]
    if test_edit:
        test = test_edit(test)
    if neg_edit:
        neg = neg_edit(neg)
    if train:
        (folder / "toy.train.rating").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows))
    (folder / "toy.test.rating").write_text("\n".join(test) + "\n")
    (folder / "toy.test.negative").write_text("\n".join(neg) + "\n")
    return folder


def prepared(root, tmp_path, **options):
    raw = read_source("ncf", root, name="toy", negatives=NEG, **options)
    tables, meta = prepare(raw, PrepareConfig(), "ncf", options)
    return write_prepared(tables, meta, tmp_path / "prepared")


def test_the_given_split_and_its_negatives_are_kept_with_their_ids(tmp_path):
    data = prepared(write_ncf(tmp_path / "ncf"), tmp_path)
    assert data.metadata["split_method"] == "given"
    assert data.table("train").num_rows == 24 and data.table("test").num_rows == N_USERS
    users, items = candidates(data.table("test"), data.table("test_negatives"))
    assert users.tolist() == list(range(N_USERS))
    assert items[2].tolist() == [8, 10, 11, 0]  # user 2: held-out item 8, negatives 10, 11, 0, ids as in the files


def test_a_negative_equal_to_the_held_out_item_is_not_counted():
    """NCF's evaluation ranks candidates in a dict keyed by item, so a listed test item collapses into itself."""
    users = np.array([0, 1])
    items = np.array([[5, 5, 1, 2], [6, 3, 4, 7]])  # user 0's negatives list its own held-out item 5
    scores = {5: 0.9, 1: 0.1, 2: 0.2, 6: 0.5, 3: 0.6, 4: 0.7, 7: 0.1}
    score = lambda u, i: torch.tensor([[scores[int(x)] for x in row] for row in i])  # noqa: E731
    out = sampled_metrics(score, users, items, ks=(1,))
    assert out["hr@1"] == 0.5  # user 0 ranks first (its duplicate is not a rival), user 1 third


def test_the_ml1m_rebuild_uses_ncf_ids_and_drops_the_test_pairs(tmp_path):
    ml1m = tmp_path / "ml-1m"
    ml1m.mkdir()
    ratings = [(1, 50), (1, 20), (2, 20), (2, 70), (2, 50), (3, 70), (3, 20)]  # MovieIDs 50, 20, 70 -> items 0, 1, 2
    (ml1m / "ratings.dat").write_text("".join(f"{u}::{m}::4::{100 + k}\n" for k, (u, m) in enumerate(ratings)))
    ncf = tmp_path / "ncf"
    ncf.mkdir()
    (ncf / "toy.test.rating").write_text("0\t1\t4\t101\n1\t2\t4\t103\n2\t1\t4\t999\n")
    (ncf / "toy.test.negative").write_text("(0,1)\t2\n(1,2)\t0\n(2,1)\t0\n")
    raw = read_source("ncf", ncf, name="toy", negatives=1, ml1m_root=str(ml1m))
    train = raw.interactions.filter(np.array(raw.interactions.column("split").to_pylist()) == "train")
    pairs = sorted(zip(train.column("user").to_pylist(), train.column("item").to_pylist()))
    assert pairs == [(0, 0), (1, 0), (1, 1), (2, 2)]  # every ML-1M pair but (0,1), (1,2), (2,1)
    assert any("rebuilt from" in n and "4 pairs" in n for n in raw.notes)
    (ncf / "toy.test.rating").write_text("0\t2\t4\t101\n1\t2\t4\t103\n2\t1\t4\t999\n")  # (0,2) is no ML-1M rating
    with pytest.raises(DataFormatError, match=r"toy.test.rating:1: test pair \(0,2\) is not an ML-1M rating"):
        read_source("ncf", ncf, name="toy", negatives=1, ml1m_root=str(ml1m))


def _replace(index, text):
    return lambda lines: [text if i == index else line for i, line in enumerate(lines)]


@pytest.mark.parametrize(
    "test_edit, neg_edit, message",
    [
        (_replace(2, "2\t5\t5\t9"), None, r"toy.test.rating:3: the pair \(2,5\) is also a training pair"),
        (_replace(3, "3\t40\t5\t9"), None, r"toy.test.rating:4: item 40 is beyond the training items \(0..11\)"),
        (lambda t: t + ["9\t1\t5\t9"], None, r"toy.test.rating:7: user 9 has no training interactions"),
        (lambda t: t + ["1\t9\t5\t9"], None, r"toy.test.rating:7: user 1 has a second test pair \(first at line 2\)"),
        (
            None,
            _replace(1, "(1,7)\t8\t9\t10"),
            r"toy.test.negative:2: \(1,7\) differs from toy.test.rating:2's \(1,6\)",
        ),
        (None, _replace(4, "(4,0)\t2\t3"), r"toy.test.negative:5: expected 3 negatives, found 2"),
        (None, _replace(0, "(0,4)\t6\t7\t99"), r"toy.test.negative:1: negative item 99 is beyond the training items"),
        (None, _replace(5, "5,9\t11\t0\t1"), r"toy.test.negative:6: expected '\(user,item\)'"),
        (None, lambda n: n[:5], r"toy.test.negative: no negative line for test user 5 \(toy.test.rating:6\)"),
    ],
)
def test_every_anomaly_is_a_located_error_or_skipped_and_counted(tmp_path, test_edit, neg_edit, message):
    root = write_ncf(tmp_path / "ncf", test_edit=test_edit, neg_edit=neg_edit)
    with pytest.raises(DataFormatError, match=message):
        read_source("ncf", root, name="toy", negatives=NEG)
    data = prepared(root, tmp_path, on_bad_lines="skip")
    report = data.metadata["bad_lines"]
    assert re.search(message, report["examples"][0]) and report["skipped"] <= 2  # its pair's other file may count
    assert "dropped with their skipped lines" in " ".join(data.metadata["notes"])
    users, _ = candidates(data.table("test"), data.table("test_negatives"))
    assert data.table("test").num_rows == len(users) <= N_USERS  # no test pair without its candidates


def test_rated_negatives_are_kept_and_reported(tmp_path):
    root = write_ncf(tmp_path / "ncf", neg_edit=_replace(3, "(3,10)\t10\t6\t0"))  # user 3: its test item, its item 6
    data = prepared(root, tmp_path)
    _, items = candidates(data.table("test"), data.table("test_negatives"))
    assert items[3].tolist() == [10, 10, 6, 0]
    notes = " ".join(data.metadata["notes"])
    assert "1 users' negative lines list their own test item" in notes
    assert "1 users' negative lines list an item of their training set (1 negatives" in notes


def test_the_cli_prepares_the_format_and_refuses_a_resplit(tmp_path, capsys):
    root = write_ncf(tmp_path / "ncf")
    args = ["data", "prepare", "ncf", "--root", str(root), "--set", "name=toy", "--set", "negatives=3"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert PreparedDataset(tmp_path / "a").table("test_negatives").num_rows == N_USERS
    assert main([*args, "--split", "ratio", "--out", str(tmp_path / "b")]) == 2
    assert "the source gives its test negatives: prepare it with split given" in capsys.readouterr().err


@pytest.mark.real_data
def test_ncf_ml1m_rebuilt_from_movielens(shared_data, tmp_path):
    raw = read_source("ncf", shared_data / "ncf", ml1m_root=str(shared_data / "ml-1m"))
    tables, meta = prepare(raw, PrepareConfig(), "ncf")
    assert tables["train"].num_rows == 994_169 and tables["test"].num_rows == 6040
    assert tables["test_negatives"].num_rows == 6040
    assert any(n.startswith("156 users' negative lines list their own test item") for n in meta["notes"])
    data = write_prepared(tables, meta, tmp_path / "ml1m")
    users, items = candidates(data.table("test"), data.table("test_negatives"))
    assert items[0, :3].tolist() == [25, 1064, 174]  # user 0: its test item, then the file's first negatives


def test_a_study_dataset_takes_the_readers_options_into_its_id(tmp_path):
    root = write_ncf(tmp_path / "ncf")
    spec = DatasetSpec(format="ncf", root=str(root), options={"name": "toy", "negatives": 3})
    check_dataset_spec(spec, "study.yaml")
    data = materialise_dataset(spec, str(tmp_path / "out"))
    assert data.table("test_negatives").num_rows == N_USERS
    assert spec_id(spec) != spec_id(DatasetSpec(format="ncf", root=str(root), options={"name": "toy"}))
    plain = DatasetSpec(format="ncf", root=str(root))
    assert spec_id(plain) == content_id(
        "dataset-spec", {k: v for k, v in asdict(plain).items() if k != "options"}, _stamp(str(root)), None
    )  # a spec without options keeps its former id
    with pytest.raises(ConfigError, match=r"^study.yaml: dataset.options.negative: not an option of format 'ncf'"):
        check_dataset_spec(DatasetSpec(format="ncf", root=str(root), options={"negative": 3}), "study.yaml")
