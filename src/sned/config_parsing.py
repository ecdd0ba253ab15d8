"""Config plumbing shared by every config section: typed fields, YAML files and ``key=value``
overrides. Errors are :class:`ConfigError` naming the file, the section, the key and the value."""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config file, key or value is invalid. The message names it."""


def typed_fields(cls, raw: dict[str, Any], section: str = "") -> dict[str, Any]:
    """Check ``raw`` against the field types of dataclass ``cls`` before building it.

    Numbers written as strings (YAML 1.1 reads ``5e-4`` as a string) become numbers; a value
    of the wrong type is a ConfigError naming the key and the value, e.g.
    ``train.batch_size: expected an integer (got 'abc')``. Types other than bool / int /
    float / str, optionals, tuples and dicts of those are left to the class itself."""
    hints = typing.get_type_hints(cls)
    prefix = f"{section}." if section else ""
    return {k: _typed(f"{prefix}{k}", v, hints[k]) if k in hints else v for k, v in raw.items()}


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _typed(key: str, value: Any, tp: Any) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _typed(key, value, inner[0]) if len(inner) == 1 else value
    if origin is tuple and isinstance(value, (list, tuple)):
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_typed(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{key}: expected {len(args)} values (got {value!r})")
        return tuple(_typed(f"{key}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict and isinstance(value, dict):
        return {_typed(f"{key} key", k, args[0]): _typed(f"{key}[{k}]", v, args[1])
                for k, v in value.items()}
    if origin in (tuple, dict):
        raise ConfigError(f"{key}: expected a {'list' if origin is tuple else 'mapping'} "
                          f"(got {value!r})")
    if tp not in _TYPE_NAMES:
        return value
    if tp in (int, float) and isinstance(value, str):
        try:  # YAML 1.1 reads "5e-4" as a string; JSON mapping keys ("16") are strings
            value = float(value) if tp is float else int(value, 10)
        except ValueError:
            pass
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, tp) or (tp is not bool and isinstance(value, bool)):
        raise ConfigError(f"{key}: expected {_TYPE_NAMES[tp]} (got {value!r})")
    if tp is int and not -MAX_INT <= value <= MAX_INT:
        raise ConfigError(f"{key}: {value} is too large (an integer of at most {MAX_INT})")
    return value


MAX_INT = 2 ** 63 - 1
"""The largest integer a config or command-line value may hold (torch's int64)."""


def read_yaml(path: Path, what: str = "config file") -> Any:
    """Parse a YAML (or JSON) file; unreadable, binary or malformed files are ConfigErrors
    that name the file (and the line, for syntax errors)."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except (UnicodeDecodeError, IsADirectoryError) as e:
        raise ConfigError(f"{what} {str(path)!r} is not a YAML text file: {e}") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        why = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{what} {str(path)!r} is not valid YAML{line}: {why}") from None


def parse_override(item: str) -> tuple[str, Any]:
    """``"a.b=value"`` → ``("a.b", parsed value)``; values are parsed as YAML scalars/lists."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value")
    key, value = item.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override {item!r} has no key (expected key=value)")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as e:
        why = getattr(e, "problem", None) or "syntax error"
        raise ConfigError(f"override {item!r}: value {value!r} is not valid YAML ({why}); "
                          f"quote it or fix the brackets") from None
    if isinstance(parsed, str):  # YAML 1.1 reads "5e-4" as a string
        try:
            parsed = float(parsed)
        except ValueError:
            pass
    return key.strip(), parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of ``raw`` with each ``key=value`` override set (dotted keys, list indices)."""
    out = copy.deepcopy(raw)
    for item in overrides:
        key, value = parse_override(item)
        set_key(out, key, value, item)
    return out


def set_key(raw: dict[str, Any], key: str, value: Any, item: str | None = None) -> None:
    """Set dotted ``key`` (``a.b``, ``levels.0.mult``) in ``raw`` in place; a path through
    a non-mapping or past a list's end is a ConfigError naming the override ``item``."""
    parts = key.split(".")
    node: Any = raw
    for i, p in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list) and p.isdigit() and int(p) < len(node):
            if last:
                node[int(p)] = value
            else:
                node = node[int(p)]
        elif isinstance(node, dict):
            if last:
                node[p] = value
            else:
                node = node.setdefault(p, {})
        else:
            where = ".".join(parts[:i]) or "the config"
            what = f"a list of {len(node)}" if isinstance(node, list) else repr(node)
            raise ConfigError(f"override {item or key!r}: {where} is {what}, which has no "
                              f"key {p!r}")


def section_from_dict(cls, raw: Any, name: str, source: str):
    """``cls(**raw)`` for a config section (a frozen dataclass) read from ``source``: None gives the
    defaults; unknown keys, wrong types and invalid values raise ConfigError naming the
    source, the section and the key."""
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: section {name!r} must be a mapping")
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - valid)
    if unknown:
        raise ConfigError(f"{source}: unknown key {name}.{unknown[0]!r}; valid keys are "
                          f"{sorted(valid)}")
    d = dict(raw)
    try:
        d = typed_fields(cls, d, name)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    try:
        return cls(**d)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: section {name!r}: {e}") from None
