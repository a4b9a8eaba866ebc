"""Dataclass configs: YAML files hold values, dotted overrides change single fields.

Each config is a (nested) dataclass whose fields carry a one-line docstring-like
``metadata["help"]``; :func:`load_config` reads YAML, applies ``section.field=value``
overrides and validates types before any model is built, with the fix in the message.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ecgqa import userfiles
from ecgqa.errors import EcgqaError

C = TypeVar("C")
MAX_TEXT_BYTES = 16 << 20          # a config, prompt or metadata file is far smaller


class ConfigError(EcgqaError):
    """A config value is missing, unknown or of the wrong type."""


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxdict = 2, 4, 4, 4
_SHORT.maxset = _SHORT.maxfrozenset = 4
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 60, 60, 40


def short(value: Any) -> str:
    """A bounded one-line ``repr`` for messages: a value from a file may be huge, deeply
    nested, self-referencing (YAML aliases) or hold newlines."""
    try:
        return _SHORT.repr(value)
    except Exception:                       # noqa: BLE001 - a repr that fails is no message
        return f"<{type(value).__name__}>"


def expand_path(path: str | os.PathLike) -> Path:
    """``Path(path).expanduser()``; ``~nosuchuser/x`` stays as given (no home to put there)."""
    p = Path(path)
    try:
        return p.expanduser()
    except RuntimeError:
        return p


def read_text(path: str | os.PathLike, error: type[EcgqaError] = ConfigError,
              limit: int = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of a small regular file (:func:`ecgqa.userfiles.read_text`, at most
    ``limit`` bytes); problems raise ``error``, one line."""
    return userfiles.read_text(path, error, limit)


def read_yaml_sections(path: Path, keys: tuple[str, ...], expected: str,
                       error: type[EcgqaError] = ConfigError) -> dict:
    """A small YAML file whose ``keys`` are mappings (a saved model's or adapter's config);
    anything else is ``error``: ``"{path}: expected {expected}"``, one line."""
    data = parse_yaml(read_text(path, error), str(path), error)
    if not isinstance(data, dict) or not all(isinstance(data.get(k), dict) for k in keys):
        raise error(f"{path}: expected {expected}")
    return data


def check_ranges(cfg, checks: list[tuple[str, bool]]) -> None:
    """``(field name, holds)`` pairs of a config: the first that does not hold is a
    :class:`ConfigError` ``"{name}: value {value!r} is out of range"``."""
    for name, ok in checks:
        if not ok:
            raise ConfigError(f"{name}: value {getattr(cfg, name)!r} is out of range")


def section_config(cls: type[C], data: dict, key: str, path: Path,
                   error: type[EcgqaError] = ConfigError) -> C:
    """``from_dict(cls, data[key])``, a bad value raised as ``error`` naming ``path``."""
    try:
        return from_dict(cls, data[key], f"{key}.")
    except ConfigError as err:
        raise error(f"{path}: {err}") from None


def parse_yaml(text: str, where: str, error: type[EcgqaError] = ConfigError) -> Any:
    """``yaml.safe_load(text)``; any failure (syntax, an unknown ``!!tag``, an undefined
    alias, nesting too deep, a bad timestamp ...) is ``error`` with one line naming ``where``."""
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = " ".join(str(err.problem or err.context or "").split())
        raise error(f"{where}: invalid YAML{at}: {what}") from None
    except RecursionError:
        raise error(f"{where}: invalid YAML: nested too deeply") from None
    except Exception as err:                # noqa: BLE001 - PyYAML's constructors raise
        # ValueError, AttributeError, ... on values such as `!!int x` or `2001-13-45`
        what = " ".join(str(err).split())[:200] or type(err).__name__
        raise error(f"{where}: invalid YAML: {what}") from None


def field(default: Any = dataclasses.MISSING, *, help: str, **kw) -> Any:  # noqa: A002
    """A dataclass field with its ``--help`` text."""
    if isinstance(default, (list, dict, set)) or (dataclasses.is_dataclass(default)
                                                  and not isinstance(default, type)):
        value = default
        return dataclasses.field(default_factory=lambda: copy.deepcopy(value),
                                 metadata={"help": help}, **kw)
    return dataclasses.field(default=default, metadata={"help": help}, **kw)


def from_dict(cls: type[C], data: dict | None, where: str = "") -> C:
    """Build dataclass ``cls`` from a dict, checking names and types recursively."""
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{where.rstrip('.') or cls.__name__}: expected a mapping, got "
                          f"{short(data)}")
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    odd = [k for k in data if not isinstance(k, str)]
    if odd:
        raise ConfigError(f"config key {where}{short(odd[0])} is not a name; keys are "
                          f"strings such as {where}{sorted(names)[0]}")
    unknown = [k for k in data if k not in names]
    if unknown:
        k = unknown[0]
        near = difflib.get_close_matches(k[:100], names, n=1)
        hint = (f"; did you mean {where}{near[0]}?" if near
                else f"; known: {', '.join(sorted(names))}")
        raise ConfigError(f"unknown config key {where}{short(k)[1:-1]}{hint}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _coerce(hints[f.name], data[f.name], f"{where}{f.name}")
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"{where or cls.__name__}: {' '.join(str(err).split())}") from None


def _coerce(tp, value, where: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        last = None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, where)
            except ConfigError as err:
                last = err
        raise last or ConfigError(f"{where}: bad value {short(value)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {short(value)}")
        return from_dict(tp, value, where + ".")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {short(value)}")
        inner = args[0] if args else Any
        items = [_coerce(inner, v, where) for v in value]
        return items if origin is list else tuple(items)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {short(value)}")
        _check_tree(value, where)
        return dict(value)
    if tp is Any:
        _check_tree(value, where)
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{where}: expected true/false, got {short(value)}")
    if tp in (int, float):
        return _number(tp, value, where)
    if tp is str:
        if value is None or isinstance(value, (dict, list, tuple, set, bytes)):
            raise ConfigError(f"{where}: expected a string, got {short(value)}")
        return str(value)
    if typing.get_origin(tp) is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: must be one of {', '.join(map(str, args))}, "
                              f"got {short(value)}")
        return value
    return value


MAX_TREE_NODES = 100_000       # a free-form mapping (projector_kwargs ...) is a few values


def _check_tree(value, where: str) -> None:
    """A free-form value must be a finite tree: YAML aliases can make it refer to itself
    (``&a {k: *a}``) or expand to billions of nodes (nested aliases), which every later
    copy, comparison or save would follow forever."""
    stack, count = [(value, ())], 0
    while stack:
        node, parents = stack.pop()
        if not isinstance(node, (dict, list, tuple)):
            continue
        if any(node is p for p in parents):
            raise ConfigError(f"{where}: the value refers to itself (a YAML alias loop)")
        count += len(node)
        if count > MAX_TREE_NODES:
            raise ConfigError(f"{where}: more than {MAX_TREE_NODES} values (YAML aliases "
                              "expanding?); give a small mapping")
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, (*parents, node)) for child in children)


def _number(tp: type, value, where: str) -> int | float:
    """An int or a finite float from a number or its text; NaN and infinities are refused
    (no setting of ecgqa means anything by them)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{where}: expected a number, got {short(value)}")
    try:
        out = tp(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {short(value)}") from None
    if isinstance(value, float) and not math.isfinite(value) or (
            isinstance(out, float) and not math.isfinite(out)):
        raise ConfigError(f"{where}: expected a finite number, got {short(value)}")
    if tp is int and isinstance(value, float) and value != out:
        raise ConfigError(f"{where}: expected an integer, got {short(value)}")
    return out


def parse_overrides(overrides: list[str]) -> dict:
    """``["meta.inner_lr=0.05", "--seed", "3"]`` -> nested dict (YAML-parsed values)."""
    out: dict = {}
    items = list(overrides)
    i = 0
    while i < len(items):
        item = items[i]
        if item.startswith("--"):
            item = item[2:]
            if "=" not in item:
                if i + 1 >= len(items):
                    raise ConfigError(f"override --{item} needs a value")
                item = f"{item}={items[i + 1]}"
                i += 1
        if "=" not in item:
            raise ConfigError(f"override {short(item)}: write key=value or --key value")
        key, raw = item.split("=", 1)
        parts = key.replace("-", "_").split(".")
        if not all(p.strip() for p in parts):
            raise ConfigError(f"override {short(item)}: the key needs a name before '=' and "
                              "between dots, e.g. meta.inner_lr=0.05")
        value = parse_yaml(raw, f"override {short(key)}") if raw != "" else ""
        node = out
        for depth, p in enumerate(parts[:-1]):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {short(key)}: {'.'.join(parts[:depth + 1])} is "
                                  "set to a value by another override, not a section")
        node[parts[-1]] = value
        i += 1
    return out


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(cls: type[C], path: str | os.PathLike | None = None,
                overrides: list[str] | None = None) -> C:
    """Read YAML ``path`` (optional), apply overrides, validate into ``cls``."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        data = parse_yaml(read_text(p), str(p))
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: expected a mapping at the top level, got "
                              f"{type(data).__name__}")
    data = merge(data, parse_overrides(overrides or []))
    return from_dict(cls, data)


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)


def save_config(obj, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML (atomically)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    tmp.write_text(yaml.safe_dump(_plain(to_dict(obj)), sort_keys=False))
    os.replace(tmp, p)
    return p


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x
