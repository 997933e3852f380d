"""Users described by what a prepared dataset knows of them: profile columns (``user_attributes``: ML-100K's
age, gender, occupation; ML-1M's ``users.dat``) or behaviour (the categories of the items in their
training history, from ``item_attributes``). Used to define a backdoor's target group and the
categorical features a prompt generator reads (docs/methods.md section 6)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from distrec.config import Fraction
from distrec.data.dataset import PreparedDataset

AGE_BANDS = [18, 25, 35, 45, 50, 56]  # MovieLens 1M's age groups: under 18, 18-24, ..., 56+


@dataclass
class GroupSpec:
    """A profile group (``attribute`` equal to ``value``, or within ``[min, max]``) or a behaviour group
    (``category``: users whose training items have that category in at least ``share`` of them)."""

    attribute: str | None = None
    value: str | int | None = None
    min: float | None = None
    max: float | None = None
    category: int | None = None
    share: Fraction = 0.5

    def __post_init__(self):
        if (self.attribute is None) == (self.category is None):
            raise ValueError(
                "a group is defined by exactly one of attribute (a profile column) or category (behaviour)"
            )
        if self.attribute is not None and self.value is None and self.min is None and self.max is None:
            raise ValueError(f"attribute {self.attribute!r}: give value, or min and/or max")

    def describe(self) -> str:
        if self.category is not None:
            return f"users with category {self.category} in at least {self.share:.0%} of their training items"
        if self.value is not None:
            return f"users with {self.attribute} = {self.value}"
        return f"users with {self.attribute} in [{self.min}, {self.max}]"


def _column(dataset: PreparedDataset, name: str) -> tuple[np.ndarray, np.ndarray]:
    if not dataset.has("user_attributes"):
        raise ValueError(
            f"{dataset.uri}: no user_attributes table (profiles come with ML-100K's u.user or ML-1M's users.dat)"
        )
    table = dataset.table("user_attributes")
    if name not in table.column_names:
        raise ValueError(
            f"{dataset.uri}: user_attributes has no column {name!r}; columns: "
            f"{[c for c in table.column_names if c != 'user_id']}"
        )
    return table.column("user_id").to_numpy(), table.column(name).to_numpy(zero_copy_only=False)


def category_shares(dataset: PreparedDataset, category: int, split: str = "train") -> np.ndarray:
    """Per user, the share of their ``split`` interactions whose item has ``category``."""
    if not dataset.has("item_attributes"):
        raise ValueError(f"{dataset.uri}: no item_attributes table: a behaviour group needs item categories")
    attrs = dataset.table("item_attributes")
    has = np.zeros(dataset.n_items, bool)
    cats = attrs.column("categories").to_pylist()
    has[attrs.column("item_id").to_numpy()[[category in (c or []) for c in cats]]] = True
    t = dataset.table(split)
    users, items = t.column("user_id").to_numpy(), t.column("item_id").to_numpy()
    total = np.bincount(users, minlength=dataset.n_users)
    hits = np.bincount(users, weights=has[items], minlength=dataset.n_users)
    return np.divide(hits, total, out=np.zeros(dataset.n_users), where=total > 0)


def group_mask(dataset: PreparedDataset, spec: GroupSpec) -> np.ndarray:
    """Boolean ``[n_users]``: who is in the group."""
    if spec.category is not None:
        return category_shares(dataset, spec.category) >= spec.share
    users, values = _column(dataset, spec.attribute)
    if spec.value is not None:
        inside = values.astype(str) == str(spec.value)
    else:
        v = values.astype(float)
        inside = (v >= (-np.inf if spec.min is None else spec.min)) & (v <= (np.inf if spec.max is None else spec.max))
    mask = np.zeros(dataset.n_users, bool)
    mask[users[inside]] = True
    return mask


@dataclass
class FeatureSpec:
    """Categorical user features for a prompt generator: profile ``columns`` (``age`` is banded by
    ``age_bands``), or, without profiles, the user's most frequent item category (``dominant_category``)."""

    columns: list[str] = field(default_factory=lambda: ["age", "gender", "occupation"])
    age_bands: list[int] = field(default_factory=lambda: list(AGE_BANDS))


def user_features(dataset: PreparedDataset, spec: FeatureSpec) -> tuple[np.ndarray, list[int]]:
    """``[n_users, F]`` feature ids and each feature's cardinality (id 0: unknown)."""
    if not dataset.has("user_attributes"):
        return _dominant_category(dataset)
    cols, sizes = [], []
    for name in spec.columns:
        users, values = _column(dataset, name)
        if name == "age":
            codes = np.searchsorted(np.asarray(spec.age_bands), values.astype(float), side="right") + 1
        else:
            _, codes = np.unique(values.astype(str), return_inverse=True)
            codes = codes + 1
        col = np.zeros(dataset.n_users, np.int64)
        col[users] = codes
        cols.append(col)
        sizes.append(int(codes.max()) + 1 if len(codes) else 1)
    return np.stack(cols, 1), sizes


def _dominant_category(dataset: PreparedDataset) -> tuple[np.ndarray, list[int]]:
    if not dataset.has("item_attributes"):
        raise ValueError(f"{dataset.uri}: neither user_attributes nor item_attributes: no user features for a prompt")
    attrs = dataset.table("item_attributes")
    first = np.zeros(dataset.n_items, np.int64)  # 0: no category
    first[attrs.column("item_id").to_numpy()] = [c[0] + 1 if c else 0 for c in attrs.column("categories").to_pylist()]
    t = dataset.table("train")
    users, items = t.column("user_id").to_numpy(), t.column("item_id").to_numpy()
    n_cat = int(first.max()) + 1
    counts = np.zeros((dataset.n_users, n_cat))
    np.add.at(counts, (users, first[items]), 1)
    counts[:, 0] = 0
    dominant = np.where(counts.sum(1) > 0, counts.argmax(1), 0)
    return dominant[:, None].astype(np.int64), [n_cat]
