"""Loading and validating configs: YAML files and ``--set KEY=VALUE`` overrides against a dataclass."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pydantic
import yaml


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


def validate(schema: type, values: dict, source: str, what: str) -> dict:
    """Check ``values`` against the dataclass ``schema``: unknown keys and wrong types are errors that
    name ``source`` (a file or ``--set``) and the key. Returns the values, coerced to the field types."""
    names = {f.name for f in dataclasses.fields(schema)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown} for {what}; valid keys are {sorted(names)}")
    try:
        obj = pydantic.TypeAdapter(schema).validate_python(values, strict=False)
    except pydantic.ValidationError as exc:
        raise ConfigError(f"{source}: {'; '.join(_problem(e) for e in exc.errors())} for {what}") from None
    return {k: getattr(obj, k) for k in values}


def _problem(error: dict, with_input: bool = True) -> str:
    """One pydantic error as ``key K: message`` (and ``(got V)``); a check across fields (``__post_init__``)
    has no key of its own and its message names the keys, so it stands alone."""
    if not error["loc"]:
        return error["msg"]
    got = f" (got {error.get('input')!r})" if with_input else ""
    return f"key {'.'.join(str(p) for p in error['loc'])}: {error['msg']}{got}"


def check_keys(schema: type, values: dict | None, source: str, path: str) -> dict:
    """Like :func:`validate`, for one section of a larger document: errors name the file and the full
    key path (``study.yaml: victims.wrmf.factorz: unknown key; valid keys: ...``)."""
    if values is not None and not isinstance(values, dict):
        raise ConfigError(f"{source}: {path}: expected a mapping, found {type(values).__name__}")
    values = dict(values or {})
    names = sorted(f.name for f in dataclasses.fields(schema))
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"{source}: {path}.{unknown[0]}: unknown key; valid keys: {', '.join(names)}")
    try:
        obj = pydantic.TypeAdapter(schema).validate_python(values, strict=False)
    except pydantic.ValidationError as exc:
        e = exc.errors()[0]
        where = ".".join([path, *(str(p) for p in e["loc"])])
        raise ConfigError(f"{source}: {where}: {e['msg']} (got {e.get('input')!r})") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{source}: {path}: {exc}") from None
    return {k: getattr(obj, k) for k in values}


def describe(schema: type) -> str:
    """One line per config key: name, type and default."""
    lines = []
    for f in dataclasses.fields(schema):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        lines.append(f"  {f.name:<18} {kind:<14} default {default!r}")
    return "\n".join(lines)


def load_document(schema: type, path: str | Path):
    """Read the YAML file ``path`` and validate it against the (pydantic) dataclass ``schema``, nested
    keys included; an unknown key or a wrong type is an error naming the file and the key path."""
    raw = load_yaml(path)
    try:
        return pydantic.TypeAdapter(schema).validate_python(raw)
    except pydantic.ValidationError as exc:
        raise ConfigError(f"{path}: {'; '.join(_problem(e, with_input=False) for e in exc.errors())}") from None
