"""The columns of a recommender study: ``victim`` or ``victim+defense``, with training defenses from the
defense registry. Shared by the scenarios whose columns are registry victims (poisoning, robustness)."""

from __future__ import annotations

from distrec.config import ConfigError, check_keys
from distrec.defenses import create_defense, defense_class, list_defenses
from distrec.models.registry import create_victim, list_victims, victim_class


def check_victims_and_defenses(victims: dict[str, dict], defenses: dict[str, dict], source: str) -> None:
    """Every victim and defense name is registered and every key of theirs exists, with its type."""
    for name, vcfg in victims.items():
        if name not in list_victims():
            raise ConfigError(f"{source}: victims.{name}: unknown victim; registered: {', '.join(list_victims())}")
        check_keys(victim_class(name).Config, vcfg, source, f"victims.{name}")
    for name, dcfg in defenses.items():
        if name not in list_defenses():
            raise ConfigError(f"{source}: defenses.{name}: unknown defense; registered: {', '.join(list_defenses())}")
        check_keys(defense_class(name).Config, dcfg, source, f"defenses.{name}")


def default_columns(victims: dict, defenses: dict) -> list[str]:
    """Every victim, then every victim with every defense that supports it."""
    cols = list(victims)
    for d in defenses:
        cols += [f"{v}+{d}" for v in victims if defense_class(d).supports(victim_class(v))]
    return cols


def check_columns(columns: list[str], victims: dict, defenses: dict, source: str) -> None:
    for i, column in enumerate(columns):
        victim, _, defense = column.partition("+")
        if victim not in victims:
            raise ConfigError(f"{source}: columns.{i}: {victim!r} is not one of the study's victims ({', '.join(victims)})")
        if defense and defense not in defenses:
            raise ConfigError(f"{source}: columns.{i}: defense {defense!r} is not configured under defenses ({', '.join(defenses) or 'none'})")
        if defense and not defense_class(defense).supports(victim_class(victim)):
            cls = defense_class(defense)
            raise ConfigError(f"{source}: columns.{i}: defense {defense!r} cannot be applied to victim {victim!r}; it supports {', '.join(cls.supported_victims())}")


def fit_column_victim(victim: str, config: dict, defense: str | None, defense_config: dict, data):
    """A column's victim trained from scratch on ``data``, with its training defense if it has one (its
    training records in ``fit_history``, saved with the model)."""
    model = create_victim(victim, data.n_users, data.n_items, **config)
    if defense:
        model = create_defense(defense, **defense_config).apply(model)
    model.fit_history = model.fit(data, progress=False)
    return model
