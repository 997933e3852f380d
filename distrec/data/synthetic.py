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
    sampler: str = "gumbel",
) -> RawDataset:
    """Generate the dataset; the same arguments always give the same bytes.

    ``cluster_affinity``: how many times likelier a user picks an item of its own cluster.
    ``image_size``: side of the per-item RGB image, 0 for none.
    ``sampler``: ``gumbel`` (the default: a Gumbel top-k over every item per user, O(users x items), exact
    sampling without replacement) or ``linear`` (draws by inverse CDF, duplicates redrawn: O(interactions x log
    items), the same distribution up to the order of a user's draws; for millions of interactions).
    """
    if n_items < 2 * avg_degree:
        raise ValueError(f"n_items ({n_items}) must be at least twice avg_degree ({avg_degree})")
    if sampler not in ("gumbel", "linear"):
        raise ValueError(f"sampler must be 'gumbel' or 'linear', got {sampler!r}")
    rng = np.random.default_rng(seed)
    user_cluster = rng.integers(0, n_clusters, n_users)
    item_cluster = rng.integers(0, n_clusters, n_items)
    popularity = 1.0 / np.arange(1, n_items + 1) ** zipf_exponent
    popularity = popularity[rng.permutation(n_items)]
    degrees = np.clip(rng.lognormal(np.log(avg_degree), 0.5, n_users).astype(int), 5, n_items // 2)

    users, items, ratings, stamps = [], [], [], []
    start = rng.integers(1_000_000_000, 1_100_000_000, n_users)
    if sampler == "linear":
        u, i = linear_draws(degrees, user_cluster, item_cluster, popularity, cluster_affinity, rng)
        same = item_cluster[i] == user_cluster[u]
        users, items = [u], [i]
        ratings = [np.clip(np.rint(3.0 + 1.2 * same + rng.normal(0, 0.8, len(u))), 1, 5)]
        gaps = rng.integers(60, 86_400, len(u))
        elapsed, first = np.cumsum(gaps), np.r_[0, np.cumsum(degrees)[:-1]]  # each user's clock starts at its start
        stamps = [start[u] + elapsed - np.repeat(elapsed[first] - gaps[first], degrees)]
    else:
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


def linear_draws(
    degrees, user_cluster, item_cluster, popularity, affinity: float, rng
) -> tuple[np.ndarray, np.ndarray]:
    """Each user's ``degrees[u]`` distinct items, drawn with probability proportional to popularity times
    ``affinity`` for items of the user's cluster: a draw is from the user's own cluster with probability its
    share of the weight, then an item by inverse CDF within the cluster (own) or over the other clusters (a draw
    from every item, redrawn while it lands in the user's cluster); duplicates of a user are redrawn. Rows come
    sorted by user."""
    n_clusters = int(max(user_cluster.max(), item_cluster.max())) + 1
    by_cluster = [np.flatnonzero(item_cluster == c) for c in range(n_clusters)]
    cdf_in = [np.cumsum(popularity[ids]) for ids in by_cluster]
    cdf_all = np.cumsum(popularity)
    own_mass = np.array([affinity * cdf[-1] if len(cdf) else 0.0 for cdf in cdf_in])
    p_own = own_mass / (own_mass + cdf_all[-1] - own_mass / affinity)
    users = np.repeat(np.arange(len(degrees)), degrees)
    items = np.full(len(users), -1, np.int64)
    todo = np.arange(len(users))
    while len(todo):
        cluster = user_cluster[users[todo]]
        own = rng.random(len(todo)) < p_own[cluster]
        for c in np.unique(cluster[own]):
            rows = todo[own & (cluster == c)]
            pick = np.searchsorted(cdf_in[c], rng.random(len(rows)) * cdf_in[c][-1], side="right")
            items[rows] = by_cluster[c][np.minimum(pick, len(by_cluster[c]) - 1)]
        rows = todo[~own]
        while len(rows):
            pick = np.searchsorted(cdf_all, rng.random(len(rows)) * cdf_all[-1], side="right")
            items[rows] = np.minimum(pick, len(cdf_all) - 1)
            rows = rows[item_cluster[items[rows]] == user_cluster[users[rows]]]
        key = users * len(popularity) + items
        order = np.lexsort((np.arange(len(key)), key))
        repeat = np.zeros(len(key), bool)
        repeat[order[1:]] = key[order[1:]] == key[order[:-1]]
        todo = np.flatnonzero(repeat)
    return users, items
