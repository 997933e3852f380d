"""The columns of a recommender study: a victim behind a chain of defenses (:class:`Column`), checked
against the study's victims and defenses. Shared by the scenarios whose columns are registry victims
(poisoning, robustness)."""

from __future__ import annotations

from distrec.config import ConfigError, check_keys
from distrec.defenses import defense_class, list_defenses
from distrec.defenses.chain import Column, check_column
from distrec.models.registry import list_victims, registered_victim, victim_class


def check_victims_and_defenses(victims: dict[str, dict], defenses: dict[str, dict], source: str) -> None:
    """Every victim and defense name is registered and every key of theirs exists, with its type and range. A
    victim entry's name is the registered victim, or any label with the registered one under ``victim``."""
    for label, vcfg in victims.items():
        name, settings = registered_victim(label, vcfg)
        if name not in list_victims():
            key = f"victims.{label}.victim" if name != label else f"victims.{label}"
            raise ConfigError(
                f"{source}: {key}: unknown victim {name!r}; registered: {', '.join(list_victims())} (another label "
                "takes victim: NAME)"
            )
        check_keys(victim_class(name).Config, settings, source, f"victims.{label}")
    for name, dcfg in defenses.items():
        if name not in list_defenses():
            raise ConfigError(f"{source}: defenses.{name}: unknown defense; registered: {', '.join(list_defenses())}")
        check_keys(defense_class(name).Config, dcfg, source, f"defenses.{name}")


def victim_of(victims: dict, label: str) -> type:
    """The registered victim class a study's victim entry builds."""
    return victim_class(registered_victim(label, victims[label])[0])


def default_columns(victims: dict, defenses: dict) -> list[str]:
    """Every victim, then every victim with every single defense that supports it."""
    cols = list(victims)
    for d in defenses:
        cols += [f"{v}+{d}" for v in victims if defense_class(d).supports(victim_of(victims, v))]
    return cols


def _parse_known(text: str, i: int, victims: dict, source: str) -> Column:
    """Column ``i`` parsed; its victim must be one of the study's."""
    column = Column.parse(text)
    if column.victim not in victims:
        raise ConfigError(
            f"{source}: columns.{i}: {column.victim!r} is not one of the study's victims ({', '.join(victims)})"
        )
    return column


def check_columns(
    columns: list[str], victims: dict, defenses: dict, source: str, kinds: tuple[str, ...] = ("data", "training")
) -> list[Column]:
    """Each column parsed and checked (:func:`~distrec.defenses.chain.check_column`); ``kinds``: the
    defense kinds the scenario can place."""
    parsed = []
    for i, text in enumerate(columns):
        column = _parse_known(text, i, victims, source)
        for d in column.defenses:
            if d in list_defenses() and defense_class(d).kind not in kinds:
                raise ConfigError(
                    f"{source}: columns.{i}: {d!r} is a {defense_class(d).kind} defense; this study places "
                    f"{' and '.join(kinds)} defenses"
                )
        check_column(column, victim_of(victims, column.victim), defenses, source, f"columns.{i}")
        parsed.append(column)
    return parsed


def check_one_defense_columns(columns: list[str], victims: dict, defenses: dict, source: str, scenario: str) -> None:
    """Columns of a scenario that places one defense per column: ``victim`` or ``victim+defense``, each named
    in the study's ``victims`` and ``defenses``."""
    for i, text in enumerate(columns):
        column = Column.parse(text)
        if len(column.defenses) > 1:
            raise ConfigError(
                f"{source}: columns.{i}: {text!r} chains defenses; the {scenario} scenario places one defense a column"
            )
        _parse_known(text, i, victims, source)
        if column.defenses and column.defenses[0] not in defenses:
            raise ConfigError(
                f"{source}: columns.{i}: defense {column.defenses[0]!r} is not configured under defenses "
                f"({', '.join(defenses) or 'none'})"
            )
