"""Line-oriented parsing with exact error locations (file, line, column) for delimited text files."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distrec.data.errors import BadLines, DataFormatError

_SEPARATORS = ("\t", "::", ",", "|", ";", " ")


def require_file(root: Path, name: str) -> Path:
    """``root / name``, or a :class:`DataFormatError` saying which file is expected where."""
    path = root / name
    if not path.exists():
        raise DataFormatError(path, f"file not found: expected {name} in {root}")
    return path


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def iter_lines(path: str | Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` without the line ending; errors name the file and line.

    Empty files, undecodable bytes and truncated or corrupt gzip streams raise :class:`DataFormatError`.
    Blank lines are yielded too, so that callers decide what they mean.
    """
    path = Path(path)
    if not path.exists():
        raise DataFormatError(path, "file not found")
    lineno = 0
    try:
        with _open_binary(path) as fh:
            for lineno, raw in enumerate(fh, start=1):
                try:
                    text = raw.decode(encoding)
                except UnicodeDecodeError as exc:
                    raise DataFormatError(
                        path,
                        f"not valid {encoding} text (byte 0x{raw[exc.start]:02x}); "
                        f"this file must be {encoding}-encoded",
                        lineno,
                        exc.start + 1,
                    ) from None
                if lineno == 1 and text.startswith("\ufeff"):  # a UTF-8 byte-order mark
                    text = text[1:]
                yield lineno, text.rstrip("\r\n")
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataFormatError(path, f"corrupt or truncated gzip stream after line {lineno} ({exc})") from None
    if lineno == 0:
        raise DataFormatError(path, "file is empty")


def separator_hint(text: str, expected_fields: int, used: str) -> str:
    """Name a separator that would split ``text`` into ``expected_fields`` fields, if one does."""
    for sep in _SEPARATORS:
        if sep != used and len(text.split(sep)) == expected_fields:
            return f"; the line splits into {expected_fields} fields on {sep!r}: wrong separator?"
    return ""


def _column_of(text: str, sep: str, index: int) -> int:
    """1-based character column where field ``index`` starts."""
    col = 0
    for _ in range(index):
        col = text.index(sep, col) + len(sep)
    return col + 1


@dataclass(frozen=True)
class Scale:
    """A rating scale: values ``low`` .. ``high`` in steps of ``step`` (MovieLens: 1-5 by 1; latest: 0.5-5 by 0.5)."""

    low: float
    high: float
    step: float
    source: str = ""

    def outside(self, values: np.ndarray) -> np.ndarray:
        k = (values - self.low) / self.step
        return (values < self.low) | (values > self.high) | (np.abs(k - np.round(k)) > 1e-6)

    def describe(self) -> str:
        source = self.source + " " if self.source else ""
        return f"outside the {source}scale {self.low:g}-{self.high:g} in steps of {self.step:g}"


INT64 = (-(2**63), 2**63 - 1)


@dataclass(frozen=True)
class Field:
    """One column of a delimited file: ``kind`` is ``int``, ``float``, ``str`` or ``skip``; ``scale`` the
    values a ``float`` column may take."""

    name: str
    kind: str = "int"
    scale: Scale | None = None


def cast(field: Field, text: str):
    """The field's value, or a ValueError whose message says why (non-numeric, not finite, beyond
    int64, outside the scale)."""
    if field.kind == "str":
        return text
    try:
        value = int(text) if field.kind == "int" else float(text)
    except ValueError:
        raise ValueError(
            f"non-numeric {field.name}: {text!r} is not {'an integer' if field.kind == 'int' else 'a number'}"
        ) from None
    if field.kind == "int" and not INT64[0] <= value <= INT64[1]:
        raise ValueError(f"{field.name} {text!r} does not fit a 64-bit integer")
    if field.kind == "float" and not np.isfinite(value):
        raise ValueError(f"{field.name} {text.strip()!r} is not a number")
    if field.scale is not None and field.scale.outside(np.array([value]))[0]:
        raise ValueError(f"{field.name} {text.strip()!r} is {field.scale.describe()}")
    return value


def parse_delimited(
    path: str | Path,
    sep: str,
    fields: Sequence[Field],
    bad_lines: BadLines,
    *,
    encoding: str = "utf-8",
    header: Sequence[str] | None = None,
    allow_extra: bool = False,
) -> dict[str, np.ndarray]:
    """Parse a delimited file into one numpy array per non-skipped field, plus ``_line`` (line numbers).

    ``header``: the exact expected first line's field names (checked, case-insensitive); a repeated
    header later in the file is reported as such. ``allow_extra`` accepts trailing extra fields.
    """
    path = Path(path)
    n = len(fields)
    out: dict[str, list] = {f.name: [] for f in fields if f.kind != "skip"}
    line_numbers: list[int] = []
    header_norm = [h.lower() for h in header] if header else None
    lines = iter_lines(path, encoding)
    if header_norm is not None:
        _, first = next(lines)
        got = [h.strip().lower() for h in first.split(sep)]
        if got != header_norm:
            raise DataFormatError(path, f"expected header {sep.join(header)!r}, found {first!r}", 1)
    for lineno, text in lines:
        if not text.strip():
            bad_lines.handle(DataFormatError(path, "blank line", lineno))
            continue
        parts = text.split(sep)
        if len(parts) != n and not (allow_extra and len(parts) > n):
            bad_lines.handle(
                DataFormatError(
                    path,
                    f"wrong field count: expected {n} fields separated by {sep!r}, found {len(parts)}"
                    + separator_hint(text, n, sep),
                    lineno,
                )
            )
            continue
        if header_norm is not None and [p.strip().lower() for p in parts[:n]] == header_norm:
            bad_lines.handle(DataFormatError(path, "duplicate header line", lineno))
            continue
        values = []
        for i, f in enumerate(fields):
            if f.kind == "skip":
                continue
            try:
                values.append(cast(f, parts[i]))
            except ValueError as exc:
                values.append(None)
                bad_lines.handle(DataFormatError(path, str(exc), lineno, _column_of(text, sep, i)))
                break
        else:
            for f, v in zip((f for f in fields if f.kind != "skip"), values):
                out[f.name].append(v)
            line_numbers.append(lineno)
    dtypes = {"int": np.int64, "float": np.float64, "str": object}
    result = {f.name: np.asarray(out[f.name], dtype=dtypes[f.kind]) for f in fields if f.kind != "skip"}
    result["_line"] = np.asarray(line_numbers, np.int64)
    return result


def parse_id_lists(
    path: str | Path, bad_lines: BadLines, *, sep: str | None = None
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Parse ``user item item ...`` lines into flat ``(users, items)`` int64 arrays, in file order.

    Also returns the line number of every row, so that later checks (ids out of range) can point at it.
    A line holding only a user id is a user without interactions here, not an error.
    """
    path = Path(path)
    users: list[int] = []
    items: list[int] = []
    rows_line: list[int] = []
    for lineno, text in iter_lines(path):
        parts = text.split(sep)
        if not parts:
            bad_lines.handle(DataFormatError(path, "blank line", lineno))
            continue
        try:
            ids = [int(p) for p in parts]
        except ValueError:
            col_idx = next(i for i, p in enumerate(parts) if not p.lstrip("-").isdigit())
            hint = separator_hint(text, 2, " ") if len(parts) == 1 else ""
            bad_lines.handle(
                DataFormatError(path, f"non-numeric id {parts[col_idx]!r}{hint}", lineno, text.find(parts[col_idx]) + 1)
            )
            continue
        u = ids[0]
        users.extend([u] * (len(ids) - 1))
        items.extend(ids[1:])
        rows_line.extend([lineno] * (len(ids) - 1))
    return np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64), rows_line
