"""Copying folders to and from a storage URI (a local folder or any ``pyarrow.fs`` URI)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs

from distrec.data.dataset import resolve_uri  # noqa: F401  (re-exported for callers)


def exists(uri: str) -> bool:
    fs, path = resolve_uri(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def upload(local_dir: str | Path, uri: str) -> None:
    fs, path = resolve_uri(uri)
    fs.create_dir(path, recursive=True)
    pafs.copy_files(str(Path(local_dir).resolve()), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


def download(uri: str, local_dir: str | Path) -> Path:
    fs, path = resolve_uri(uri)
    Path(local_dir).mkdir(parents=True, exist_ok=True)
    pafs.copy_files(path, str(Path(local_dir).resolve()), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    return Path(local_dir)
