"""Reader registry: ``read_source(format, root, **options)`` for every supported source format."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

from distrec.data.readers.images import read_idx, read_images
from distrec.data.readers.lightgcn import read_lightgcn
from distrec.data.readers.movielens import read_ml_1m, read_ml_100k, read_ml_latest
from distrec.data.readers.ncf import read_ncf
from distrec.data.readers.recbole import read_recbole
from distrec.data.readers.selfrec import read_selfrec
from distrec.data.readers.sequence import read_sequence
from distrec.data.readers.table import read_table
from distrec.data.source import RawDataset

READERS: dict[str, Callable[..., RawDataset]] = {
    "ml-100k": read_ml_100k,
    "ml-1m": read_ml_1m,
    "ml-latest": read_ml_latest,
    "lightgcn": read_lightgcn,
    "ncf": read_ncf,
    "sequence": read_sequence,
    "recbole": read_recbole,
    "selfrec": read_selfrec,
    "idx": read_idx,
    "images": read_images,
    "table": read_table,
}


WITH_TEST_NEGATIVES = ("ncf",)  # formats whose files give the test split's negatives

FORMATS = {  # name: (one line for ``distrec list formats``, where such files come from)
    "ml-100k": ("MovieLens 100K: u.data, with u.item / u.user when present", "Harper and Konstan, TiiS 2015"),
    "ml-1m": (
        "MovieLens 1M: ratings.dat (or its implicit pairs), movies.dat, users.dat",
        "Harper and Konstan, TiiS 2015",
    ),
    "ml-latest": ("MovieLens latest / 20M / 25M / 32M: ratings.csv, movies.csv", "GroupLens"),
    "lightgcn": (
        "One user per line with its items: train.txt / test.txt (Gowalla, Yelp2018, ...)",
        "He et al., SIGIR 2020",
    ),
    "ncf": (
        "NCF leave-one-out files: NAME.train.rating, NAME.test.rating, NAME.test.negative (99 negatives a user)",
        "He et al., WWW 2017",
    ),
    "sequence": ("One user per line, items in time order (SASRec / S3-Rec data files)", "Kang and McAuley, ICDM 2018"),
    "recbole": ("RecBole atomic files: .inter, .item, .user", "Zhao et al., CIKM 2021"),
    "selfrec": (
        "SELFRec / ARLib split files: train.txt, val.txt, test.txt of 'user item weight'",
        "Yu et al., TKDE 2023",
    ),
    "idx": ("MNIST / Fashion-MNIST IDX image and label files", "LeCun et al.; Xiao et al., 2017"),
    "images": ("A tar or folder of item images named by item id (e.g. the ML-1M posters)", "distrec"),
    "table": ("A Parquet or headed CSV file with user and item columns", "distrec"),
}


def reader_options(fmt: str) -> dict[str, object]:
    """The options a format's reader takes, with their defaults."""
    sig = inspect.signature(READERS[fmt])
    return {n: p.default for n, p in list(sig.parameters.items())[1:]}


def read_source(fmt: str, root: str | Path, **options) -> RawDataset:
    """Read ``root`` in format ``fmt``; unknown formats or options are errors that list the valid ones."""
    if fmt not in READERS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {sorted(READERS)}")
    valid = reader_options(fmt)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"format {fmt!r} has no option(s) {unknown}; its options are {sorted(valid)}")
    if not Path(root).exists():
        raise FileNotFoundError(f"--root {root} does not exist")
    return READERS[fmt](root, **options)
