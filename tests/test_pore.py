"""PORE's certificate against brute force, and its checks."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from distrec.data.matrix import UserItemCSR
from distrec.defenses import create_defense
from distrec.defenses.pore import certified_in, certified_out, delta, largest_e
from distrec.models.itemknn import item_similarity, recommend, user_matrix

# six users over five items: each row a user's items
PROFILES = [[0, 1], [0, 1, 2], [0, 2], [1, 3], [0, 1, 4], [2, 3]]
N_ITEMS = 5


def csr(profiles) -> UserItemCSR:
    users = np.repeat(np.arange(len(profiles)), [len(p) for p in profiles])
    return UserItemCSR.from_arrays(
        users, np.concatenate([np.asarray(p, np.int64) for p in profiles]), len(profiles), N_ITEMS
    )


def exact_votes(profiles, user: int, s: int, top_n: int) -> np.ndarray:
    """The exact vote probability of every item for ``user``: every ordered draw of s users, each a base
    ItemKNN fit on the drawn users (the real pipeline's functions)."""
    x = user_matrix(csr(profiles))
    n = len(profiles)
    p = np.zeros(N_ITEMS)
    for draw in itertools.product(range(n), repeat=s):
        sim = item_similarity(x, 2, 0.0, np.bincount(np.asarray(draw), minlength=n))
        p[recommend(x, sim, np.asarray([user]), top_n)[0]] += 1.0 / n**s
    return p


def in_top(p: np.ndarray, allowed: np.ndarray, item: int, top_n: int) -> bool:
    """``item`` in the top ``top_n`` of the vote probabilities, ties resolved against the certificate."""
    others = allowed.copy()
    others[item] = False
    return int((p[others] >= p[item]).sum()) < top_n


@pytest.mark.parametrize("s,top_n", [(1, 1), (2, 1), (1, 2)])
def test_the_certificate_holds_against_every_fake_profile_by_brute_force(s, top_n):
    n, checked = len(PROFILES), 0
    all_profiles = [list(c) for k in range(1, N_ITEMS + 1) for c in itertools.combinations(range(N_ITEMS), k)]
    small = [q for q in all_profiles if len(q) <= 2]  # two fake users: each of at most two items
    for user in range(n):
        p = exact_votes(PROFILES, user, s, top_n)
        allowed = np.ones(N_ITEMS, bool)
        allowed[PROFILES[user]] = False
        for item in np.flatnonzero(allowed):
            e_out = certified_out(p, p, allowed, item, top_n, n, s)
            e_in = certified_in(p, p, allowed, item, top_n, n, s)
            for e in (1, 2):
                if e > max(e_out, e_in):
                    continue
                for fakes in itertools.product(all_profiles if e == 1 else small, repeat=e):
                    q = exact_votes(PROFILES + list(fakes), user, s, top_n)
                    if e <= e_out:
                        assert not in_top(q, allowed, item, top_n), (user, item, e, fakes)
                    if e <= e_in:
                        assert in_top(q, allowed, item, top_n) or not allowed[item], (user, item, e, fakes)
                    checked += 1
    assert checked > 100  # the certificate is not vacuous on this case


def test_delta_and_the_largest_certified_size():
    assert delta(0, 100, 5) == 0 and delta(1, 100, 1) == pytest.approx(1 / 101)
    e = largest_e(np.asarray([0.2]), 100, 5)[0]
    assert delta(e, 100, 5) < 0.2 <= delta(e + 1, 100, 5)
    assert largest_e(np.asarray([0.0]), 100, 5)[0] == -1


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("n_models", 0, "pore: n_models: Input should be greater than 0 (got 0)"),
        ("top_n", 0, "pore: top_n: Input should be greater than 0 (got 0)"),
        ("alpha", 1.0, "pore: alpha: Input should be less than 1 (got 1.0)"),
    ],
)
def test_pore_keys_out_of_range_are_errors(key, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        create_defense("pore", **{key: value})


def test_a_subsample_larger_than_the_users_is_a_config_error_before_ray(tmp_path):
    from distrec.config import ConfigError
    from distrec.study.runner import load_study

    path = tmp_path / "study.yaml"
    path.write_text(
        "scenario: poisoning\ndataset:\n  synthetic: {n_users: 150, n_items: 80, avg_degree: 10, image_size: 0, seed: 2}\n"
        "threat: {n_fake: 3, n_targets: 2, seed: 0}\nattacks: [{name: random}]\nvictims: {itemknn: {}}\n"
        "defenses: {pore: {subsample: 400}}\n"
    )
    with pytest.raises(
        ConfigError, match=r"defenses.pore.subsample: 400 users per base model, more than the data's 150 users"
    ):
        load_study(path).plan(str(tmp_path / "out"))
