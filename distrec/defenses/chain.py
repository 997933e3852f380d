"""A study column: a victim behind an ordered chain of defenses (``lightgcn+pca+apr``: screen the
training users with PCA, then train LightGCN with APR), and the one place that builds a defended victim.

A chain runs its ``data`` defenses first (each screens what the previous one kept), then at most one
``training`` defense, then its ``deployment`` defenses in order (a detector that rejects inputs last)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from distrec.config import ConfigError
from distrec.defenses.registry import KINDS, create_defense, defense_class, list_defenses
from distrec.defenses.screening import Screening, without_users
from distrec.models.registry import create_victim, registered_victim


@dataclass(frozen=True)
class Column:
    """``victim`` behind ``defenses`` (names of the study's configured defenses, in order)."""

    victim: str
    defenses: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Column:
        victim, *defenses = str(text).split("+")
        return cls(victim, tuple(defenses))

    def __str__(self) -> str:
        return "+".join((self.victim, *self.defenses))

    def of_kind(self, kind: str) -> tuple[str, ...]:
        return tuple(d for d in self.defenses if defense_class(d).kind == kind)


def victim_and_defense(text: str) -> tuple[str, str]:
    """A column of a scenario that places at most one defense (ranking, item images): its victim and its
    defense ('' for none; chained names joined by ``+``, which such a scenario's check refuses)."""
    column = Column.parse(text)
    return column.victim, "+".join(column.defenses)


def check_column(column: Column, victim_cls: type, configured: dict, source: str, key: str) -> None:
    """Every defense is registered and configured, supports the victim, and the chain is in kind order
    (data, training, deployment) with at most one training defense, no repeat, a rejecting detector last."""
    seen = []
    for d in column.defenses:
        if d not in list_defenses():
            raise ConfigError(
                f"{source}: {key}: unknown defense {d!r} in {str(column)!r}; registered: {', '.join(list_defenses())}"
            )
        if d not in configured:
            raise ConfigError(
                f"{source}: {key}: defense {d!r} is not configured under defenses ({', '.join(configured) or 'none'})"
            )
        if d in seen:
            raise ConfigError(f"{source}: {key}: {str(column)!r} repeats defense {d!r}")
        cls = defense_class(d)
        if not cls.supports(victim_cls):
            raise ConfigError(
                f"{source}: {key}: defense {d!r} cannot be applied to victim {column.victim!r}; it supports "
                f"{', '.join(cls.supported_victims())}"
            )
        if seen and KINDS.index(cls.kind) < KINDS.index(defense_class(seen[-1]).kind):
            raise ConfigError(
                f"{source}: {key}: in {str(column)!r} the {cls.kind} defense {d!r} comes after the "
                f"{defense_class(seen[-1]).kind} defense {seen[-1]!r}; order a chain data, training, deployment"
            )
        if seen and getattr(defense_class(seen[-1]), "rejects", False):
            raise ConfigError(f"{source}: {key}: in {str(column)!r} {seen[-1]!r} rejects inputs and must come last")
        seen.append(d)
    alone = [d for d in column.defenses if getattr(defense_class(d), "alone", False)]
    if alone and len(column.defenses) > 1:
        raise ConfigError(
            f"{source}: {key}: {str(column)!r}: {alone[0]!r} is an ensemble of its own and takes no other defense in "
            "its column"
        )
    if len(column.of_kind("training")) > 1:
        raise ConfigError(
            f"{source}: {key}: {str(column)!r} has training defenses {', '.join(column.of_kind('training'))}; a "
            "victim is fit with one"
        )


@dataclass
class Defended:
    """A victim fit behind its column's data and training defenses, with what each data defense did."""

    model: object
    screenings: list[Screening] = field(default_factory=list)

    @property
    def removed(self) -> np.ndarray | None:
        """The users the data defenses removed (their union), or None without a data defense."""
        if not self.screenings:
            return None
        return np.logical_or.reduce([s.removed for s in self.screenings])


def fit_defended(
    column: Column,
    victim_config: dict,
    defense_configs: dict,
    data,
    reference=None,
    seed: int = 0,
    progress: bool = False,
) -> Defended:
    """Screen ``data`` with the column's data defenses (threshold on ``reference``, default ``data``
    itself), then fit the victim on what they kept with its training defense; the training records in
    ``model.fit_history``. Deployment defenses are the scenario's to place in front of the model.
    In a chain of detectors each sees what the ones before it kept, and so does its reference: its threshold
    is set on the clean users the earlier detectors let through, so its false-positive rate is its own
    ``fpr`` of them (a threshold from the unscreened reference removes far more of the screened data)."""

    name, victim_config = registered_victim(column.victim, victim_config)

    def plain_fit(train_data):
        model = create_victim(name, train_data.n_users, train_data.n_items, **victim_config)
        model.fit(train_data, progress=False)
        return model

    screenings = []
    kept = data
    reference = reference if reference is not None else data
    ref_kept = reference
    for d in column.of_kind("data"):
        screening = create_defense(d, **defense_configs.get(d, {})).screen(kept, ref_kept, plain_fit, seed)
        screenings.append(screening)
        kept = without_users(kept, np.logical_or.reduce([s.removed for s in screenings]))
        ref_kept = without_users(reference, np.logical_or.reduce([s.reference_mask for s in screenings]))
    model = create_victim(name, data.n_users, data.n_items, **victim_config)
    for d in column.of_kind("training"):
        model = create_defense(d, **defense_configs.get(d, {})).apply(model)
    model.fit_history = model.fit(kept, progress=progress)
    return Defended(model, screenings)
