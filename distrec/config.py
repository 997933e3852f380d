"""Loading and validating configs: YAML files and ``--set KEY=VALUE`` overrides against a dataclass."""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from pathlib import Path
from typing import Annotated

import pydantic
import yaml

# Field constraints for config dataclasses (``fpr: Share = 0.05``): :func:`check` enforces them with the key's
# path, for config files, ``--set`` pairs and ``create_victim`` / ``create_attack`` / ``create_defense`` alike.
Share = Annotated[float, pydantic.Field(gt=0, lt=1)]  # the open interval (0, 1)
Fraction = Annotated[float, pydantic.Field(gt=0, le=1)]  # (0, 1]
HalfOpenShare = Annotated[float, pydantic.Field(ge=0, lt=1)]  # [0, 1)
UnitInterval = Annotated[float, pydantic.Field(ge=0, le=1)]  # [0, 1]
Positive = pydantic.PositiveFloat
NonNegative = pydantic.NonNegativeFloat
AtLeastOne = pydantic.PositiveInt
NonNegativeInt = pydantic.NonNegativeInt
Shares = Annotated[list[Share], pydantic.Field(min_length=1)]


class ConfigError(ValueError):
    """A config problem, naming the file (or ``--set``) and the key path."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that repeats a key (plain YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506  (a SafeLoader)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, found {type(data).__name__}")
    return data


def check(schema: type, values: dict | None, source: str, path: str = ""):
    """The one config validator: ``values`` as an instance of the dataclass ``schema`` (a pydantic dataclass's
    nested keys included), with its field constraints and its own cross-field checks applied. Every problem is a
    :class:`ConfigError` worded one way, ``SOURCE: KEY.PATH: what is wrong (got VALUE)``, and an unknown key
    lists the valid ones. ``path``: where ``values`` sits in its file (empty for ``--set`` pairs)."""
    if values is not None and not isinstance(values, dict):
        raise ConfigError(f"{source}: {path or 'config'}: expected a mapping, found {type(values).__name__}")
    values = dict(values or {})
    names = [f.name for f in dataclasses.fields(schema) if not f.name.startswith("_")]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"{source}: {_key(path, unknown[:1])}: unknown key; valid keys: {', '.join(sorted(names))}")
    try:
        return _adapter(schema).validate_python(values)
    except pydantic.ValidationError as exc:
        e = exc.errors()[0]
        loc = [str(p) for p in e["loc"]]
        if e["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
            valid = (f.name for f in dataclasses.fields(_schema_at(schema, loc[:-1])) if not f.name.startswith("_"))
            raise ConfigError(f"{source}: {_key(path, loc)}: unknown key; valid keys: {', '.join(valid)}") from None
        message = e["msg"].removeprefix("Value error, ")
        if not loc:  # a check across fields (``__post_init__``): its message names the keys
            raise ConfigError(f"{source}: {path + ': ' if path else ''}{message}") from None
        raise ConfigError(f"{source}: {_key(path, loc)}: {message} (got {e.get('input')!r})") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{source}: {path + ': ' if path else ''}{exc}") from None


def check_keys(schema: type, values: dict | None, source: str, path: str = "") -> dict:
    """:func:`check`, returning the given keys only (validated and coerced), for merging into other settings."""
    obj = check(schema, values, source, path)
    return {k: getattr(obj, k) for k in dict(values or {})}


@functools.cache
def _adapter(schema: type) -> pydantic.TypeAdapter:
    return pydantic.TypeAdapter(schema)


def _key(path: str, loc) -> str:
    return ".".join([p for p in [path, *loc] if p])


def _schema_at(schema: type, loc) -> type:
    """The dataclass that holds the key at ``loc`` (for listing the valid keys), through nested
    dataclasses, ``dict[str, X]`` values and ``list[X]`` items."""
    loc = list(loc)
    while loc:
        if dataclasses.is_dataclass(schema):
            hint = typing.get_type_hints(schema).get(str(loc.pop(0)))
        elif typing.get_origin(schema) in (dict, list):
            hint = typing.get_args(schema)[-1]
            loc.pop(0)
        else:
            return schema
        args = (
            [a for a in typing.get_args(hint) if a is not type(None)]
            if typing.get_origin(hint) in (typing.Union, types.UnionType)
            else [hint]
        )
        schema = args[0] if args else hint
    return schema


def describe(schema: type) -> str:
    """One line per config key: name, type and default."""
    lines = []
    for f in dataclasses.fields(schema):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        lines.append(f"  {f.name:<18} {kind:<14} default {default!r}")
    return "\n".join(lines)


def load_document(schema: type, path: str | Path):
    """Read the YAML file ``path`` and :func:`check` it against ``schema``."""
    return check(schema, load_yaml(path), str(path))
