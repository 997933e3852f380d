"""Downloads from the official sources into a cache directory, with checksum verification.

Offline (or behind a firewall) a download fails with a :class:`DownloadError` that names the file,
its checksum and where to put it, so a user can fetch it elsewhere and place it by hand.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from distrec.data.errors import DownloadError


@dataclass(frozen=True)
class RemoteFile:
    """One file of a source: ``checksum`` is ``md5:<hex>`` or ``sha256:<hex>``; ``extract`` unzips it."""

    name: str
    checksum: str
    extract: bool = False


@dataclass(frozen=True)
class Source:
    """An official dataset source: files under ``base_url``; ``root`` is the folder to pass to ``prepare``."""

    format: str
    base_url: str
    files: tuple[RemoteFile, ...]
    root: str = "."


GROUPLENS = "https://files.grouplens.org/datasets/movielens/"
LIGHTGCN = "https://raw.githubusercontent.com/gusye1234/LightGCN-PyTorch/master/data/gowalla/"
_MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

# Checksums: GroupLens' published .md5 files; LightGCN, MNIST and Fashion-MNIST files as released.
SOURCES: dict[str, Source] = {
    "ml-100k": Source(
        "ml-100k", GROUPLENS, (RemoteFile("ml-100k.zip", "md5:0e33842e24a9c977be4e0107933c0723", True),), "ml-100k"
    ),
    "ml-1m": Source(
        "ml-1m", GROUPLENS, (RemoteFile("ml-1m.zip", "md5:c4d9eecfca2ab87c1945afe126590906", True),), "ml-1m"
    ),
    "gowalla": Source(
        "lightgcn",
        LIGHTGCN,
        (
            RemoteFile("train.txt", "sha256:7244696fdeb23911319cf7b689f2e15a3c4c92549c873a5677b44e3f13cc3e62"),
            RemoteFile("test.txt", "sha256:099a2a73924e4b754dc6efd730d764f492321b53c38eb93298850c83acf57be3"),
            RemoteFile("user_list.txt", "sha256:5344c4d0deef610e1f148f23ad216a0db03b36f88834cd39a06786a672c5f5a1"),
            RemoteFile("item_list.txt", "sha256:6b186f92890cc3f0c15a6dae5d6285f125a302bb8c5ea0cd9a16cf9c16347139"),
        ),
    ),
    "mnist": Source(
        "idx",
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        tuple(
            RemoteFile(n, f"md5:{h}")
            for n, h in zip(
                _MNIST_FILES,
                (
                    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                    "d53e105ee54ea40749a09fcbcd1e9432",
                    "9fb629c4189551a2d022fa330f9573f3",
                    "ec29112dd5afa0611ce80d1b7f02629c",
                ),
            )
        ),
    ),
    "fashion-mnist": Source(
        "idx",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        tuple(
            RemoteFile(n, f"md5:{h}")
            for n, h in zip(
                _MNIST_FILES,
                (
                    "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                    "25c81989df183df01b3e8a0aad5dffbe",
                    "bef4ecab320f06d8554ea6380940ec79",
                    "bb300cfdad3c16e7a12a480ee83cd310",
                ),
            )
        ),
    ),
}


def default_cache_dir() -> Path:
    return Path(os.environ.get("DISTREC_CACHE", Path.home() / ".cache" / "distrec"))


def file_checksum(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, checksum: str) -> bool:
    algorithm, _, expected = checksum.partition(":")
    return file_checksum(path, algorithm) == expected


def download(
    name: str, cache_dir: str | Path | None = None, base_url: str | None = None, timeout: float = 60.0
) -> Path:
    """Fetch dataset ``name`` (verified, extracted) into ``cache_dir/name`` and return the folder to prepare.

    ``base_url`` replaces the official location (a mirror, or a ``file://`` folder). Verified files
    already in the cache are not fetched again.
    """
    if name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}; downloadable: {sorted(SOURCES)}")
    source = SOURCES[name]
    target = Path(cache_dir or default_cache_dir()) / name
    target.mkdir(parents=True, exist_ok=True)
    base = base_url or source.base_url
    for remote in source.files:
        path = target / remote.name
        if not (path.exists() and verify(path, remote.checksum)):
            url = base.rstrip("/") + "/" + remote.name
            partial = path.with_name(path.name + ".part")
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
                    shutil.copyfileobj(response, out)
            except (urllib.error.URLError, OSError) as exc:
                partial.unlink(missing_ok=True)
                raise DownloadError(
                    f"could not download {url} ({getattr(exc, 'reason', exc)}). Without network access, fetch it "
                    "elsewhere and put "
                    f"it at {path} ({remote.checksum}), then run this again; or pass the extracted files to "
                    f"'distrec data prepare {source.format} --root DIR'."
                ) from None
            if not verify(partial, remote.checksum):
                got = file_checksum(partial, remote.checksum.split(":")[0])
                partial.unlink()
                raise DownloadError(
                    f"{url}: checksum mismatch, expected {remote.checksum}, got {got}; the file was not kept"
                )
            partial.replace(path)
        if remote.extract:
            with zipfile.ZipFile(path) as zf:
                zf.extractall(target)
    return target / source.root
