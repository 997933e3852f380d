import hashlib
import zipfile

import pytest

from distrec.data import download as dl
from distrec.data.errors import DownloadError


def test_gowalla_from_a_local_mirror_with_real_checksums(shared_data, tmp_path):
    root = dl.download("gowalla", tmp_path / "cache", base_url=(shared_data / "lightgcn/gowalla").as_uri())
    assert (root / "train.txt").read_bytes() == (shared_data / "lightgcn/gowalla/train.txt").read_bytes()


def test_zip_source_is_verified_and_extracted(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with zipfile.ZipFile(mirror / "toy.zip", "w") as zf:
        zf.writestr("toy/ratings.dat", "1::1::5::1\n")
    md5 = hashlib.md5((mirror / "toy.zip").read_bytes()).hexdigest()
    monkeypatch.setitem(
        dl.SOURCES, "toy", dl.Source("ml-1m", mirror.as_uri(), (dl.RemoteFile("toy.zip", f"md5:{md5}", True),), "toy")
    )
    root = dl.download("toy", tmp_path / "cache")
    assert (root / "ratings.dat").read_text() == "1::1::5::1\n"
    # a second call finds the verified file in the cache and does not fetch it again
    (mirror / "toy.zip").unlink()
    assert dl.download("toy", tmp_path / "cache") == root


def test_checksum_mismatch_keeps_nothing(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "a.txt").write_text("tampered")
    monkeypatch.setitem(
        dl.SOURCES, "bad", dl.Source("lightgcn", mirror.as_uri(), (dl.RemoteFile("a.txt", "sha256:" + "0" * 64),))
    )
    with pytest.raises(DownloadError, match="checksum mismatch"):
        dl.download("bad", tmp_path / "cache")
    assert not list((tmp_path / "cache/bad").iterdir())


def test_offline_message_says_which_file_to_put_where(tmp_path):
    with pytest.raises(DownloadError) as err:
        dl.download("ml-1m", tmp_path / "cache", base_url=(tmp_path / "nowhere").as_uri())
    msg = str(err.value)
    assert str(tmp_path / "cache/ml-1m/ml-1m.zip") in msg and "md5:c4d9eecfca2ab87c1945afe126590906" in msg
