"""The synthetic generator's two samplers draw the same distribution; the linear one is exact in its counts."""

import numpy as np
import pytest

from distrec.data.synthetic import linear_draws, make_synthetic


def test_linear_draws_give_each_user_its_degree_in_distinct_items_with_the_clusters_weight():
    rng = np.random.default_rng(0)
    degrees = rng.integers(5, 40, 2000)
    user_cluster, item_cluster = rng.integers(0, 4, 2000), rng.integers(0, 4, 3000)
    popularity = 1.0 / np.arange(1, 3001) ** 0.7
    users, items = linear_draws(degrees, user_cluster, item_cluster, popularity, 10.0, rng)
    assert np.array_equal(np.bincount(users, minlength=2000), degrees)
    assert len(np.unique(users * 3000 + items)) == len(users)  # no user draws an item twice
    own = np.mean(item_cluster[items] == user_cluster[users])
    mass = np.array([popularity[item_cluster == c].sum() for c in range(4)])
    expected = np.mean((10 * mass / (10 * mass + mass.sum() - mass))[user_cluster[users]])
    assert own == pytest.approx(expected, abs=0.03)  # with replacement it would be exact; duplicates shift it a little


def test_the_two_samplers_agree_on_the_item_popularity_and_the_linear_one_is_seeded():
    def degrees(sampler, seed=3):
        raw = make_synthetic(n_users=3000, n_items=1000, avg_degree=30, image_size=0, sampler=sampler, seed=seed)
        return raw, np.sort(np.bincount(raw.interactions.column("item").to_numpy(), minlength=1000))[::-1]

    gumbel, g = degrees("gumbel")
    linear, lin = degrees("linear")
    assert gumbel.interactions.num_rows == linear.interactions.num_rows
    assert np.abs(g - lin).max() < 0.05 * g.max()  # the same popularity curve, head to tail
    assert degrees("linear")[0].interactions.equals(linear.interactions)
    assert not degrees("linear", seed=4)[0].interactions.equals(linear.interactions)
    stamps = linear.interactions.column("timestamp").to_numpy()
    users = linear.interactions.column("user").to_numpy()
    assert np.all(np.diff(stamps)[np.diff(users) == 0] > 0)  # each user's interactions in time order
    with pytest.raises(ValueError, match="sampler must be 'gumbel' or 'linear'"):
        make_synthetic(sampler="alias")
