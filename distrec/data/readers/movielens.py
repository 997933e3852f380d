"""MovieLens readers: 100K (``u.data``), 1M (``ratings.dat`` or the implicit pairs file) and "latest" CSV."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from distrec.data.errors import BadLines, DataFormatError
from distrec.data.readers.table import read_csv_columns
from distrec.data.readers.text import Field, Scale, iter_lines, parse_delimited, require_file
from distrec.data.source import RawDataset, category_table, check_known_ids, raw_interactions

ML_STARS = Scale(1, 5, 1, "MovieLens")  # 100K and 1M: whole stars
ML_HALF_STARS = Scale(0.5, 5, 0.5, "MovieLens latest")  # half stars


def parse_movie_rows(
    path: Path, rows, n_fields: int, sep: str, bad: BadLines, genres_of
) -> tuple[np.ndarray, list, list]:
    """Movie lists (``u.item``, ``movies.dat``, ``movies.csv``): ``rows`` yields ``(line, fields)`` with the
    id first and the title second; ``genres_of(fields)`` returns the movie's genre names."""
    keys, titles, genres = [], [], []
    for lineno, fields in rows:
        if len(fields) != n_fields:
            bad.handle(
                DataFormatError(
                    path,
                    f"wrong field count: expected {n_fields} fields separated by {sep!r}, found {len(fields)}",
                    lineno,
                )
            )
            continue
        try:
            keys.append(int(fields[0]))
        except ValueError:
            bad.handle(DataFormatError(path, f"non-numeric movie id {fields[0]!r}", lineno, 1))
            continue
        titles.append(fields[1])
        genres.append(genres_of(fields))
    return np.asarray(keys, np.int64), titles, genres


def read_ml_100k(root: str | Path, *, on_bad_lines: str = "error", official_split: str | None = None) -> RawDataset:
    """MovieLens 100K: ``u.data`` (tab: user item rating timestamp), ``u.item``/``u.genre``/``u.user`` (``|``, latin-1).

    ``official_split``: ``u1``..``u5``, ``ua`` or ``ub`` reads that official base/test pair as the given split.
    """
    root = Path(root)
    bad = BadLines(on_bad_lines)
    raw = RawDataset("ml-100k", bad_lines=bad)
    fields = [Field("user"), Field("item"), Field("rating", "float", ML_STARS), Field("timestamp")]
    if official_split is None:
        files = [(require_file(root, "u.data"), None)]
    else:
        if official_split not in ("u1", "u2", "u3", "u4", "u5", "ua", "ub"):
            raise ValueError(f"official_split must be one of u1..u5, ua, ub; got {official_split!r}")
        files = [
            (require_file(root, f"{official_split}.base"), "train"),
            (require_file(root, f"{official_split}.test"), "test"),
        ]
    parts, splits = [], []
    for path, split in files:
        cols = parse_delimited(path, "\t", fields, bad)
        parts.append((path, cols))
        splits += [split] * len(cols["user"]) if split else []
        raw.add_source(path)
    cols = {k: np.concatenate([c[k] for _, c in parts]) for k in parts[0][1]}

    item_path = require_file(root, "u.item")
    genre_names = [t.split("|")[0] for _, t in iter_lines(require_file(root, "u.genre"), "latin-1") if t.strip()]
    rows = ((lineno, text.split("|")) for lineno, text in iter_lines(item_path, "latin-1"))
    keys, titles, genres = parse_movie_rows(
        item_path,
        rows,
        5 + len(genre_names),
        "|",
        bad,
        lambda p: [genre_names[i] for i, flag in enumerate(p[5:]) if flag == "1"],
    )
    raw.add_source(item_path)
    raw.item_attributes, raw.category_names = category_table(keys, genres, titles, genre_names)

    user_path = require_file(root, "u.user")
    u = parse_delimited(
        user_path,
        "|",
        [Field("user"), Field("age"), Field("gender", "str"), Field("occupation", "str"), Field("zip", "str")],
        bad,
    )
    raw.add_source(user_path)
    raw.user_attributes = pa.table(
        {
            "user": u["user"],
            "age": u["age"],
            "gender": u["gender"].astype(str),
            "occupation": u["occupation"].astype(str),
            "zip": u["zip"].astype(str),
        }
    )

    for path, c in parts:
        check_known_ids(path, "item", c["item"], keys, "u.item", c["_line"])
        check_known_ids(path, "user", c["user"], u["user"], "u.user", c["_line"])
    raw.interactions = raw_interactions(cols["user"], cols["item"], cols["rating"], cols["timestamp"], splits or None)
    return raw


def _read_ml1m_pairs_parquet(path: Path) -> tuple[np.ndarray, np.ndarray]:
    table = pq.read_table(path)
    out = []
    for name in ("userID", "movieID"):
        if name not in table.column_names:
            raise DataFormatError(path, f"missing column {name!r}; found columns {table.column_names}")
        col = table.column(name)
        try:
            out.append(pc.cast(col, pa.int64()).to_numpy())
        except pa.ArrowInvalid:
            strings = col.cast(pa.string()).to_pylist()
            row = next(i for i, v in enumerate(strings) if v is None or not v.strip().isdigit())
            raise DataFormatError(
                path, f"non-numeric {name} {strings[row]!r} in row {row + 1}", column=table.column_names.index(name) + 1
            ) from None
    return out[0], out[1]


def read_ml_1m(root: str | Path, *, on_bad_lines: str = "error") -> RawDataset:
    """MovieLens 1M: ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``) or, without it, the implicit
    pairs ``ratings_user_movie_only.parquet`` / ``.dat.gz`` (``UserID::MovieID``); ``movies.dat`` and
    ``users.dat`` (latin-1) when present."""
    root = Path(root)
    bad = BadLines(on_bad_lines)
    raw = RawDataset("ml-1m", bad_lines=bad)
    ratings_dat = root / "ratings.dat"
    pairs_parquet = root / "ratings_user_movie_only.parquet"
    pairs_gz = root / "ratings_user_movie_only.dat.gz"
    lines = None
    if ratings_dat.exists():
        c = parse_delimited(
            ratings_dat,
            "::",
            [Field("user"), Field("item"), Field("rating", "float", ML_STARS), Field("timestamp")],
            bad,
        )
        raw.interactions = raw_interactions(c["user"], c["item"], c["rating"], c["timestamp"])
        ratings_path, lines = ratings_dat, c["_line"]
    elif pairs_parquet.exists():
        users, items = _read_ml1m_pairs_parquet(pairs_parquet)
        raw.interactions = raw_interactions(users, items)
        ratings_path = pairs_parquet
        raw.notes.append("implicit pairs file: every interaction has rating 1 and no timestamp")
    elif pairs_gz.exists():
        c = parse_delimited(pairs_gz, "::", [Field("user"), Field("item")], bad)
        raw.interactions = raw_interactions(c["user"], c["item"])
        ratings_path, lines = pairs_gz, c["_line"]
        raw.notes.append("implicit pairs file: every interaction has rating 1 and no timestamp")
    else:
        raise DataFormatError(
            root,
            "no ratings file: expected ratings.dat, ratings_user_movie_only.parquet or ratings_user_movie_only.dat.gz",
        )
    raw.add_source(ratings_path)

    movies = root / "movies.dat"
    if movies.exists():
        rows = ((lineno, text.split("::")) for lineno, text in iter_lines(movies, "latin-1"))
        keys, titles, genres = parse_movie_rows(movies, rows, 3, "::", bad, lambda p: p[2].split("|") if p[2] else [])
        raw.add_source(movies)
        raw.item_attributes, raw.category_names = category_table(keys, genres, titles)
        check_known_ids(ratings_path, "movie", raw.interactions.column("item").to_numpy(), keys, "movies.dat", lines)
    users = root / "users.dat"
    if users.exists():
        u = parse_delimited(
            users,
            "::",
            [Field("user"), Field("gender", "str"), Field("age"), Field("occupation"), Field("zip", "str")],
            bad,
            encoding="latin-1",
        )
        raw.add_source(users)
        raw.user_attributes = pa.table(
            {
                "user": u["user"],
                "gender": u["gender"].astype(str),
                "age": u["age"],
                "occupation": u["occupation"],
                "zip": u["zip"].astype(str),
            }
        )
        check_known_ids(ratings_path, "user", raw.interactions.column("user").to_numpy(), u["user"], "users.dat", lines)
    return raw


def read_ml_latest(root: str | Path, *, on_bad_lines: str = "error") -> RawDataset:
    """MovieLens "latest" (and latest-small, 20M, 25M, 32M): ``ratings.csv`` with header
    ``userId,movieId,rating,timestamp``, optional ``movies.csv`` (``movieId,title,genres``)."""
    root = Path(root)
    bad = BadLines(on_bad_lines)
    raw = RawDataset("ml-latest", bad_lines=bad)
    ratings = require_file(root, "ratings.csv")
    c = read_csv_columns(
        ratings,
        {"userId": "int", "movieId": "int", "rating": "float", "timestamp": "int"},
        bad,
        scales={"rating": ML_HALF_STARS},
    )
    raw.add_source(ratings)
    raw.interactions = raw_interactions(c["userId"], c["movieId"], c["rating"], c["timestamp"])
    movies = root / "movies.csv"
    if movies.exists():
        rows = enumerate(csv.reader(io.StringIO(movies.read_text(encoding="utf-8"))), start=1)
        _, header = next(rows)
        if header != ["movieId", "title", "genres"]:
            raise DataFormatError(movies, f"expected header movieId,title,genres, found {','.join(header)}", 1)
        keys, titles, genres = parse_movie_rows(
            movies, rows, 3, ",", bad, lambda p: [] if p[2] == "(no genres listed)" else p[2].split("|")
        )
        raw.add_source(movies)
        raw.item_attributes, raw.category_names = category_table(keys, genres, titles)
        check_known_ids(ratings, "movieId", c["movieId"], keys, "movies.csv", c["_line"])
    return raw
