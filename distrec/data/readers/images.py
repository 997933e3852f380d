"""Image sources: MNIST-style idx files (gz or raw) and tars / folders of images keyed by item id."""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image, UnidentifiedImageError

from distrec.data.errors import BadLines, DataFormatError
from distrec.data.source import RawDataset

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
_IDX_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx_file(path: str | Path) -> np.ndarray:
    """Parse an idx file (``magic = 0 0 dtype ndim``, big-endian dims, then the data); gzip by suffix."""
    path = Path(path)
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataFormatError(path, f"corrupt or truncated gzip stream ({exc})") from None
    if len(data) < 4:
        raise DataFormatError(path, "file is empty" if not data else "truncated idx header")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code not in _IDX_DTYPES:
        raise DataFormatError(path, f"not an idx file (magic bytes {data[:4].hex()})")
    if len(data) < 4 + 4 * ndim:
        raise DataFormatError(path, "truncated idx header")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[dtype_code])
    expected = int(np.prod(shape)) * dtype.itemsize
    body = data[4 + 4 * ndim :]
    if len(body) != expected:
        raise DataFormatError(
            path, f"idx body has {len(body)} bytes, header shape {shape} needs {expected} (truncated file?)"
        )
    return np.frombuffer(body, dtype).reshape(shape)


def encode_png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _find_idx(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem, stem.replace("-idx", ".idx")):
        if (root / name).exists():
            return root / name
    raise DataFormatError(root / f"{stem}.gz", f"file not found: expected {stem}.gz (or uncompressed) in {root}")


def read_idx(root: str | Path, *, on_bad_lines: str = "error") -> RawDataset:
    """MNIST / Fashion-MNIST: ``train-`` and ``t10k-`` ``images-idx3-ubyte`` / ``labels-idx1-ubyte``."""
    root = Path(root)
    raw = RawDataset(root.name, bad_lines=BadLines(on_bad_lines))
    for split, prefix in (("train", "train"), ("test", "t10k")):
        img_path = _find_idx(root, f"{prefix}-images-idx3-ubyte")
        lab_path = _find_idx(root, f"{prefix}-labels-idx1-ubyte")
        images, labels = read_idx_file(img_path), read_idx_file(lab_path)
        if images.ndim != 3 or labels.ndim != 1:
            raise DataFormatError(
                img_path, f"expected images (n, h, w) and labels (n,), got {images.shape} and {labels.shape}"
            )
        if len(images) != len(labels):
            raise DataFormatError(lab_path, f"{len(labels)} labels for {len(images)} images in {img_path.name}")
        raw.labeled_images[split] = pa.table(
            {
                "image_id": pa.array(np.arange(len(images), dtype=np.int64)),
                "image": pa.array([encode_png(a) for a in images], pa.binary()),
                "label": pa.array(labels.astype(np.int64)),
            }
        )
        raw.add_source(img_path)
        raw.add_source(lab_path)
    return raw


def _probe(data: bytes, where: str, bad: BadLines) -> tuple[int, int] | None:
    """Width and height of an encoded image, or ``None`` (reported) when it cannot be decoded."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
            return im.size
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        bad.handle(DataFormatError(where, f"unreadable image ({exc.__class__.__name__}: {exc})"))
        return None


def _image_key(name: str) -> int | str:
    stem = Path(name).stem
    return int(stem) if stem.isdigit() else stem


def read_image_collection(path: str | Path, bad: BadLines) -> pa.Table:
    """Images in a tar or a folder, one file per item named ``<item id>.<ext>``: ``item``, ``image``, ``width``,
    ``height``."""
    path = Path(path)
    keys, blobs, widths, heights = [], [], [], []

    def add(name: str, data: bytes, where: str):
        size = _probe(data, where, bad)
        if size is not None:
            keys.append(_image_key(name))
            blobs.append(data)
            widths.append(size[0])
            heights.append(size[1])

    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                add(p.name, p.read_bytes(), str(p))
    elif tarfile.is_tarfile(path):
        with tarfile.open(path) as tar:
            for member in tar:
                if member.isfile() and Path(member.name).suffix.lower() in IMAGE_SUFFIXES:
                    add(member.name, tar.extractfile(member).read(), f"{path}[{member.name}]")
    else:
        raise DataFormatError(path, "expected a folder or a tar archive of images named <item id>.<ext>")
    if not keys:
        raise DataFormatError(path, f"no images found (suffixes {IMAGE_SUFFIXES})")
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise DataFormatError(path, f"two images for item {dup!r}")
    key_array = pa.array(keys) if all(isinstance(k, int) for k in keys) else pa.array([str(k) for k in keys])
    return pa.table(
        {
            "item": key_array,
            "image": pa.array(blobs, pa.binary()),
            "width": pa.array(widths, pa.int32()),
            "height": pa.array(heights, pa.int32()),
        }
    )


def read_images(root: str | Path, *, on_bad_lines: str = "error") -> RawDataset:
    """A stand-alone image collection; its item universe is the image keys."""
    root = Path(root)
    bad = BadLines(on_bad_lines)
    raw = RawDataset(root.stem, bad_lines=bad)
    raw.item_images = read_image_collection(root, bad)
    if root.is_file():
        raw.add_source(root)
    return raw
