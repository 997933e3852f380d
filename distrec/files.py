"""Paths and URIs (a local path or any ``pyarrow.fs`` URI) and atomic writes to them.

A write is atomic for a reader: the file is written under a temporary name beside its target and
renamed into place (on object stores, whose PUT publishes the whole object at once, it is written
directly), so a crash leaves the old version or the new one, never a torn file.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from pathlib import Path

import pyarrow.fs as pafs

OBJECT_STORES = ("s3", "gcs", "abfs")
TMP_MARK = ".tmp-"


def resolve_uri(uri: str | Path) -> tuple[pafs.FileSystem, str]:
    """A filesystem and path for a local path or a URI such as ``file:///...`` or ``s3://bucket/key``."""
    uri = str(uri)
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), str(Path(uri).resolve())


def atomic_write(fs: pafs.FileSystem, path: str, write) -> None:
    """``write(stream)`` into a temporary file beside ``path``, then renamed over it."""
    parent, _, name = path.rpartition("/")
    fs.create_dir(parent, recursive=True)
    if fs.type_name in OBJECT_STORES:
        with fs.open_output_stream(path) as fh:
            write(fh)
        return
    tmp = f"{parent}/.{name}{TMP_MARK}{uuid.uuid4().hex[:12]}"
    try:
        with fs.open_output_stream(tmp) as fh:
            write(fh)
        fs.move(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            fs.delete_file(tmp)
        raise


def write_local(path: str | Path, data: str | bytes) -> None:
    """:func:`atomic_write` of text or bytes to a local ``path``."""
    fs, full = resolve_uri(str(path))
    atomic_write(fs, full, lambda fh: fh.write(data.encode() if isinstance(data, str) else data))


class StorageError(OSError):
    """A folder or URI that cannot be read or written; the message names it and says what to do."""


def check_writable(uri: str | Path, what: str = "--out", timeout: float = 30.0) -> None:
    """Fail before any work when ``uri`` cannot take the outputs: a file where a folder is expected, a
    read-only or full file system, an object store that does not answer within ``timeout`` seconds."""
    uri = str(uri)
    outcome: list = []

    def probe() -> None:
        try:
            fs, path = resolve_uri(uri)
            if fs.get_file_info(path).type == pafs.FileType.File:
                raise StorageError(f"{what} {uri} is a file; give a folder")
            created = _first_missing(fs, path)
            fs.create_dir(path, recursive=True)
            test = f"{path}/.distrec-write-test{TMP_MARK}{uuid.uuid4().hex[:8]}"
            with fs.open_output_stream(test) as fh:
                fh.write(b"ok")
            fs.delete_file(test)
            if created is not None:  # the check leaves no trace: the folders it made go again
                fs.delete_dir(created)
        except BaseException as exc:  # handed to the caller's thread
            outcome.append(exc)

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise StorageError(
            f"{what} {uri}: no answer from the storage in {timeout:.0f} s; check the network and credentials"
        )
    if outcome:
        exc = outcome[0]
        if isinstance(exc, StorageError):
            raise exc
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StorageError(f"{what} {uri} cannot be written: {detail}") from exc


def _first_missing(fs: pafs.FileSystem, path: str) -> str | None:
    """The outermost folder of ``path`` that does not exist yet (None when ``path`` exists)."""
    missing = None
    while path and fs.get_file_info(path).type == pafs.FileType.NotFound:
        missing, path = path, path.rpartition("/")[0]
    return missing
