"""Generic Parquet / CSV interaction tables with a column mapping."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from distrec.data.errors import BadLines, DataFormatError
from distrec.data.readers.text import Field, Scale, cast
from distrec.data.source import RawDataset, raw_interactions


def _diagnose_csv(
    path: Path, expected: list[str], kinds: list[str], bad: BadLines, scales: dict[str, Scale]
) -> dict[str, list]:
    """Slow path for a CSV that Arrow rejected or whose values are not valid: parse row by row and
    locate every problem."""
    out = {name: [] for name in expected}
    out["_line"] = []
    with open(path, newline="", encoding="utf-8-sig") as fh:
        try:
            reader = csv.reader(fh)
            header = next(reader, None)
            for lineno, row in enumerate(reader, start=2):
                if [h.strip() for h in row] == header:
                    bad.handle(DataFormatError(path, "duplicate header line", lineno))
                    continue
                if len(row) != len(header):
                    bad.handle(
                        DataFormatError(
                            path,
                            f"wrong field count: expected {len(header)} fields separated by ',', found {len(row)}",
                            lineno,
                        )
                    )
                    continue
                vals = []
                for name, kind in zip(expected, kinds):
                    i = header.index(name)
                    try:
                        vals.append(cast(Field(name, kind, scales.get(name)), row[i]))
                    except ValueError as exc:
                        bad.handle(DataFormatError(path, str(exc), lineno, i + 1))
                        break
                else:
                    for name, v in zip(expected, vals):
                        out[name].append(v)
                    out["_line"].append(lineno)
        except UnicodeDecodeError as exc:
            raise DataFormatError(path, f"not valid utf-8 text ({exc.reason})") from None
    return out


def read_csv_columns(
    path: Path, columns: dict[str, str], bad: BadLines, sep: str = ",", scales: dict[str, Scale] | None = None
) -> dict[str, np.ndarray]:
    """Read named numeric columns (``name -> 'int' | 'float'``) from a headed CSV with Arrow, falling back
    to a row-by-row pass that names the line and column of each problem (unparsable, NaN or infinite,
    beyond int64, outside ``scales``). ``_line`` holds line numbers. A UTF-8 byte-order mark is accepted."""
    scales = scales or {}
    if path.stat().st_size == 0:
        raise DataFormatError(path, "file is empty")
    with open(path, "rb") as fh:
        first = fh.readline().decode("utf-8-sig", errors="replace").rstrip("\r\n")
    header = [h.strip() for h in first.split(sep)]
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise DataFormatError(path, f"duplicate column name(s) {dupes} in header", 1)
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataFormatError(
            path,
            f"missing column(s) {missing}; header has {header}" + ("; wrong separator?" if len(header) == 1 else ""),
            1,
        )
    types = {name: pa.int64() if kind == "int" else pa.float64() for name, kind in columns.items()}
    try:
        table = pacsv.read_csv(
            path,
            parse_options=pacsv.ParseOptions(delimiter=sep),
            convert_options=pacsv.ConvertOptions(column_types=types, include_columns=list(columns)),
        )
        if any(table.column(c).null_count for c in columns):
            raise pa.ArrowInvalid("null values")
        out = {c: table.column(c).to_numpy() for c in columns}
        if any(not np.isfinite(out[c]).all() for c, k in columns.items() if k == "float") or any(
            s.outside(out[c]).any() for c, s in scales.items()
        ):
            raise pa.ArrowInvalid("values that are not valid")
        out["_line"] = np.arange(2, table.num_rows + 2, dtype=np.int64)
        return out
    except (pa.ArrowInvalid, UnicodeDecodeError):
        if sep != ",":
            raise DataFormatError(
                path, "malformed table (run with a comma-separated copy for line-level diagnosis)"
            ) from None
        rows = _diagnose_csv(path, list(columns), list(columns.values()), bad, scales)
        if not bad.skipped:
            raise DataFormatError(
                path, "Arrow could not parse the file, but no bad row was found; check quoting"
            ) from None
        out = {c: np.asarray(rows[c], np.int64 if k == "int" else np.float64) for c, k in columns.items()}
        out["_line"] = np.asarray(rows["_line"], np.int64)
        return out


def read_table(
    root: str | Path,
    *,
    on_bad_lines: str = "error",
    user_col: str = "user_id",
    item_col: str = "item_id",
    rating_col: str | None = None,
    timestamp_col: str | None = None,
    sep: str = ",",
) -> RawDataset:
    """A Parquet file or a headed CSV file with user and item columns (ids as integers or strings),
    and optional rating and timestamp columns, named by the mapping arguments."""
    path = Path(root)
    if not path.is_file():
        raise DataFormatError(path, "the table format takes a .parquet or .csv file as --root")
    bad = BadLines(on_bad_lines)
    raw = RawDataset(path.stem, bad_lines=bad)
    wanted = {"user": user_col, "item": item_col, "rating": rating_col, "timestamp": timestamp_col}
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        missing = [c for c in wanted.values() if c and c not in table.column_names]
        if missing:
            raise DataFormatError(
                path, f"missing column(s) {missing}; the file has {table.column_names} (set user_col=..., item_col=...)"
            )
        cols = {}
        for role, name in wanted.items():
            if not name:
                continue
            col = table.column(name)
            if col.null_count:
                row = int(np.argmax(pc.is_null(col).to_numpy(zero_copy_only=False)))
                raise DataFormatError(path, f"null {name} in row {row + 1}", column=table.column_names.index(name) + 1)
            if role in ("rating", "timestamp") and not (
                pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
            ):
                raise DataFormatError(
                    path, f"column {name} must be numeric, found {col.type}", column=table.column_names.index(name) + 1
                )
            if role in ("user", "item") and pa.types.is_floating(col.type):
                raise DataFormatError(
                    path,
                    f"id column {name} is {col.type}; ids must be integers or strings",
                    column=table.column_names.index(name) + 1,
                )
            cols[role] = col.combine_chunks()
        users, items = cols["user"], cols["item"]
        rating = cols["rating"].cast(pa.float32()).to_numpy() if "rating" in cols else None
        ts = cols["timestamp"].cast(pa.int64()).to_numpy() if "timestamp" in cols else None
    else:
        kinds = {user_col: "int", item_col: "int"}
        if rating_col:
            kinds[rating_col] = "float"
        if timestamp_col:
            kinds[timestamp_col] = "int"
        c = read_csv_columns(path, kinds, bad, sep=sep)
        users, items = c[user_col], c[item_col]
        rating = c[rating_col] if rating_col else None
        ts = c[timestamp_col] if timestamp_col else None
    raw.add_source(path)
    raw.interactions = raw_interactions(users, items, rating, ts)
    return raw
