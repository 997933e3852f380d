"""The Arrow data model of a prepared dataset (one schema version for every table)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

SCHEMA_VERSION = 1

INTERACTIONS = pa.schema(
    [
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("rating", pa.float32(), nullable=False),
        pa.field("timestamp", pa.int64(), nullable=True),
        pa.field("is_fake", pa.bool_(), nullable=False),
    ]
)

ITEM_IMAGES = pa.schema(
    [
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("image", pa.binary(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
    ]
)

LABELED_IMAGES = pa.schema(
    [
        pa.field("image_id", pa.int64(), nullable=False),
        pa.field("image", pa.binary(), nullable=False),
        pa.field("label", pa.int64(), nullable=False),
    ]
)

SEQUENCES = pa.schema(
    [
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("item_ids", pa.list_(pa.int64()), nullable=False),
        pa.field("timestamps", pa.list_(pa.int64()), nullable=True),
    ]
)

SPLITS = ("train", "valid", "test")


def id_map_schema(original_type: pa.DataType) -> pa.Schema:
    """``original`` (the source's id, int64 or string) -> ``internal`` (contiguous int64)."""
    return pa.schema(
        [pa.field("original", original_type, nullable=False), pa.field("internal", pa.int64(), nullable=False)]
    )


def interactions_table(
    users: np.ndarray,
    items: np.ndarray,
    ratings: np.ndarray | None = None,
    timestamps: np.ndarray | None = None,
    is_fake: np.ndarray | None = None,
    timestamp_valid: np.ndarray | None = None,
) -> pa.Table:
    """Build an interactions table in the canonical schema; missing columns get their defaults."""
    n = len(users)
    ratings = np.ones(n, np.float32) if ratings is None else np.asarray(ratings, np.float32)
    if timestamps is None:
        ts = pa.nulls(n, pa.int64())
    else:
        mask = None if timestamp_valid is None else ~np.asarray(timestamp_valid, bool)
        ts = pa.array(np.asarray(timestamps, np.int64), pa.int64(), mask=mask)
    fake = np.zeros(n, bool) if is_fake is None else np.asarray(is_fake, bool)
    return pa.Table.from_arrays(
        [
            pa.array(np.asarray(users, np.int64)),
            pa.array(np.asarray(items, np.int64)),
            pa.array(ratings),
            ts,
            pa.array(fake),
        ],
        schema=INTERACTIONS,
    )
