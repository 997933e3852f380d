"""Errors and bad-line accounting shared by every reader."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


class DataFormatError(ValueError):
    """Bad input, located: ``file:line:column: message`` (line and column when known, 1-based)."""

    def __init__(self, path: str | Path, message: str, line: int | None = None, column: int | None = None):
        self.path = str(path)
        self.line = line
        self.column = column
        self.message = message
        where = self.path
        if line is not None:
            where += f":{line}"
            if column is not None:
                where += f":{column}"
        super().__init__(f"{where}: {message}")


class DownloadError(RuntimeError):
    """A dataset could not be fetched or failed its checksum; the message says which file to put where."""


@dataclass
class BadLines:
    """Policy for malformed lines: ``error`` raises at the first one, ``skip`` counts and reports them."""

    policy: str = "error"
    counts: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    max_examples: int = 10

    def __post_init__(self):
        if self.policy not in ("error", "skip"):
            raise ValueError(f"on_bad_lines must be 'error' or 'skip', got {self.policy!r}")

    def handle(self, error: DataFormatError) -> None:
        """Raise ``error`` under the ``error`` policy, else record it as skipped."""
        if self.policy == "error":
            raise error
        self.counts[error.message.split(" (")[0]] += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(str(error))

    @property
    def skipped(self) -> int:
        return sum(self.counts.values())

    def report(self) -> dict:
        return {
            "policy": self.policy,
            "skipped": self.skipped,
            "by_reason": dict(self.counts),
            "examples": list(self.examples),
        }
