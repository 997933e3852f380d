"""SELFRec's split files, which ARLib reads and writes: ``train.txt``, ``test.txt`` and optionally ``val.txt``, one
interaction a line, ``user item weight`` separated by spaces, ids as strings. ARLib's poisoned copies have the
same layout, their fake users named ``fakeUser<n>``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from distrec.data.errors import BadLines, DataFormatError
from distrec.data.readers.text import Field, parse_delimited, require_file
from distrec.data.source import RawDataset, raw_interactions

FILES = (("train", "train.txt"), ("valid", "val.txt"), ("test", "test.txt"))


def read_selfrec(root: str | Path, *, on_bad_lines: str = "error") -> RawDataset:
    """The given split of ``root``'s files (``val.txt`` when present). Weights are kept as ratings."""
    root = Path(root)
    bad = BadLines(on_bad_lines)
    raw = RawDataset(root.name, bad_lines=bad)
    require_file(root, "train.txt")
    require_file(root, "test.txt")
    users, items, weights, splits = [], [], [], []
    for split, name in FILES:
        path = root / name
        if not path.exists():
            continue
        c = parse_delimited(path, " ", [Field("user", "str"), Field("item", "str"), Field("weight", "float")], bad)
        users.append(c["user"].astype(str))
        items.append(c["item"].astype(str))
        weights.append(c["weight"])
        splits += [split] * len(c["user"])
        raw.add_source(path)
    if not any(len(u) for u in users):
        raise DataFormatError(root, "no interactions in train.txt / val.txt / test.txt")
    raw.interactions = raw_interactions(
        np.concatenate(users), np.concatenate(items), np.concatenate(weights), split=splits
    )
    return raw


def read_selfrec_profiles(path: str | Path, clean_users: set[str]) -> dict[str, list[str]]:
    """The fake users of a poisoned ``train.txt``: every user the clean split does not hold, with its items, in
    file order."""
    profiles: dict[str, list[str]] = {}
    bad = BadLines("error")
    c = parse_delimited(path, " ", [Field("user", "str"), Field("item", "str"), Field("weight", "float")], bad)
    for user, item in zip(c["user"].astype(str), c["item"].astype(str)):
        if user not in clean_users:
            profiles.setdefault(user, []).append(item)
    return profiles
