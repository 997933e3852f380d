"""The peak resident memory of this process, as results report it."""

from __future__ import annotations

import resource


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
