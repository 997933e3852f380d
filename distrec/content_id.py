"""Content ids: a short hash of everything that determines a result, so a rerun can skip it."""

from __future__ import annotations

import hashlib
import json


def content_id(*parts) -> str:
    """16 hex digits of the SHA-256 of ``parts`` as canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
