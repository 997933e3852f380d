"""A seeded synthetic recommendation dataset: the embedded default for the demo and fast tests.

Items have power-law (Zipf) popularity; users and items belong to latent clusters and users prefer
items of their own cluster, so that collaborative filtering has signal to learn. Each user's
interactions carry increasing timestamps (so sequences and temporal splits exist); items carry
categories and, optionally, small images whose colour encodes the item's cluster.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from distrec.data.readers.images import encode_png
from distrec.data.source import RawDataset, raw_interactions


def make_synthetic(
    n_users: int = 1000,
    n_items: int = 400,
    n_clusters: int = 8,
    avg_degree: int = 20,
    zipf_exponent: float = 0.7,
    cluster_affinity: float = 10.0,
    n_categories: int = 12,
    image_size: int = 16,
    seed: int = 0,
) -> RawDataset:
    """Generate the dataset; the same arguments always give the same bytes.

    ``cluster_affinity``: how many times likelier a user picks an item of its own cluster.
    ``image_size``: side of the per-item RGB image, 0 for none.
    """
    if n_items < 2 * avg_degree:
        raise ValueError(f"n_items ({n_items}) must be at least twice avg_degree ({avg_degree})")
    rng = np.random.default_rng(seed)
    user_cluster = rng.integers(0, n_clusters, n_users)
    item_cluster = rng.integers(0, n_clusters, n_items)
    popularity = 1.0 / np.arange(1, n_items + 1) ** zipf_exponent
    popularity = popularity[rng.permutation(n_items)]
    degrees = np.clip(rng.lognormal(np.log(avg_degree), 0.5, n_users).astype(int), 5, n_items // 2)

    users, items, ratings, stamps = [], [], [], []
    start = rng.integers(1_000_000_000, 1_100_000_000, n_users)
    for u in range(n_users):
        weight = popularity * np.where(item_cluster == user_cluster[u], cluster_affinity, 1.0)
        # Gumbel top-k: sampling without replacement proportional to weight
        keys = np.log(weight) - np.log(-np.log(rng.random(n_items)))
        chosen = np.argpartition(-keys, degrees[u])[: degrees[u]]
        chosen = chosen[np.argsort(-keys[chosen])]
        same = item_cluster[chosen] == user_cluster[u]
        users.append(np.full(len(chosen), u))
        items.append(chosen)
        ratings.append(np.clip(np.rint(3.0 + 1.2 * same + rng.normal(0, 0.8, len(chosen))), 1, 5))
        stamps.append(start[u] + np.cumsum(rng.integers(60, 86_400, len(chosen))))

    raw = RawDataset("synthetic", ordered=False)
    raw.interactions = raw_interactions(
        np.concatenate(users).astype(np.int64),
        np.concatenate(items).astype(np.int64),
        np.concatenate(ratings),
        np.concatenate(stamps),
    )
    cat_of_cluster = rng.integers(0, n_categories, n_clusters)
    secondary = rng.integers(0, n_categories, n_items)
    categories = [sorted({int(cat_of_cluster[c]), int(s)}) for c, s in zip(item_cluster, secondary)]
    raw.item_attributes = pa.table(
        {"item": pa.array(np.arange(n_items, dtype=np.int64)), "categories": pa.array(categories, pa.list_(pa.int32()))}
    )
    raw.category_names = [f"category_{i}" for i in range(n_categories)]
    raw.user_attributes = pa.table(
        {
            "user": pa.array(np.arange(n_users, dtype=np.int64)),
            "age": pa.array(rng.integers(18, 70, n_users)),
            "segment": pa.array(user_cluster.astype(np.int64)),
        }
    )
    if image_size:
        palette = rng.integers(0, 256, (n_clusters, 3))
        blobs = []
        for i in range(n_items):
            img = np.clip(palette[item_cluster[i]] + rng.normal(0, 24, (image_size, image_size, 3)), 0, 255).astype(
                np.uint8
            )
            blobs.append(encode_png(img))
        raw.item_images = pa.table(
            {
                "item": pa.array(np.arange(n_items, dtype=np.int64)),
                "image": pa.array(blobs, pa.binary()),
                "width": pa.array(np.full(n_items, image_size, np.int32)),
                "height": pa.array(np.full(n_items, image_size, np.int32)),
            }
        )
    raw.notes.append(
        f"synthetic: n_users={n_users} n_items={n_items} n_clusters={n_clusters} avg_degree={avg_degree} seed={seed}"
    )
    return raw
