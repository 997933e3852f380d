"""Files and folders at a storage URI (a local path or any ``pyarrow.fs`` URI); every write is atomic
(:func:`distrec.files.atomic_write`)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs

from distrec.files import atomic_write, resolve_uri


def exists(uri: str) -> bool:
    fs, path = resolve_uri(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def upload(local_dir: str | Path, uri: str) -> None:
    fs, path = resolve_uri(uri)
    fs.create_dir(path, recursive=True)
    pafs.copy_files(
        str(Path(local_dir).resolve()), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs
    )


def download(uri: str, local_dir: str | Path) -> Path:
    fs, path = resolve_uri(uri)
    Path(local_dir).mkdir(parents=True, exist_ok=True)
    pafs.copy_files(
        path, str(Path(local_dir).resolve()), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem()
    )
    return Path(local_dir)


def write_bytes(uri: str, data: bytes) -> None:
    fs, path = resolve_uri(uri)
    atomic_write(fs, path, lambda fh: fh.write(data))


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode())


def read_bytes(uri: str) -> bytes:
    fs, path = resolve_uri(uri)
    with fs.open_input_stream(path) as fh:
        return fh.read()


def read_text(uri: str) -> str:
    return read_bytes(uri).decode()


def delete(uri: str) -> None:
    """Remove the file or folder at ``uri`` (nothing when it does not exist)."""
    fs, path = resolve_uri(uri)
    kind = fs.get_file_info(path).type
    if kind == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif kind != pafs.FileType.NotFound:
        fs.delete_file(path)


def list_files(uri: str, suffix: str = "") -> list[str]:
    """Paths of the files directly in folder ``uri`` ending with ``suffix`` (none if it does not exist)."""
    fs, path = resolve_uri(uri)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return []
    return [i.path for i in fs.get_file_info(pafs.FileSelector(path)) if i.path.endswith(suffix)]
