import hashlib
import json

import pytest

from distrec.data.dataset import PreparedDataset, prepare, write_prepared
from distrec.data.preprocess import PrepareConfig
from distrec.data.readers import read_source
from distrec.data.schema import INTERACTIONS


def test_write_and_read_through_a_filesystem_uri(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src/ratings.dat").write_text("1::10::5::100\n1::20::4::200\n2::10::3::300\n2::30::1::400\n")
    raw = read_source("ml-1m", tmp_path / "src")
    tables, meta = prepare(raw, PrepareConfig(split="loo"), "ml-1m")
    uri = (tmp_path / "out").as_uri()  # file:///..., resolved through pyarrow.fs
    write_prepared(tables, meta, uri)
    ds = PreparedDataset(uri)
    assert ds.table("train").schema.equals(INTERACTIONS)
    info = ds.info()
    assert info["users"] == 2 and info["items"] == 3 and info["splits"] == {"train": 2, "test": 2}
    assert info["density"] == pytest.approx(4 / 6)
    source = meta["sources"][0]
    assert source["sha256"] == hashlib.sha256((tmp_path / "src/ratings.dat").read_bytes()).hexdigest()
    on_disk = json.loads((tmp_path / "out/metadata.json").read_text())
    assert on_disk["schema_version"] == 1 and on_disk["prepare"]["split"] == "loo"


def test_refuses_to_overwrite_a_foreign_directory(tmp_path, synthetic_dataset):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine/notes.txt").write_text("keep me")
    tables = {"train": synthetic_dataset.table("train")}
    with pytest.raises(FileExistsError, match="is not a distrec dataset"):
        write_prepared(tables, dict(synthetic_dataset.metadata), tmp_path / "mine")


def test_missing_dataset_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a prepared distrec dataset: no metadata.json"):
        PreparedDataset(tmp_path)
