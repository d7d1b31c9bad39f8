"""Typed configs: the one parser for ``key=value`` overrides of (nested) frozen dataclasses, and the
round trip of such configs through JSON.

Every setting of a run is a field of a frozen dataclass (flux/EDM2 style): training's
:class:`~soundvcm.training.config.TrainConfig`, each objective's config with its nested time
sampling, guidance and dropout dataclasses, the network's config with its sequence. Overrides
name a field by its dotted path (``lr=2e-4``, ``guidance.scale=3``, ``time.equal_ratio=0``) and
are parsed here, once, by the type of the value they replace: booleans, whole numbers, numbers
(never NaN or infinity), tuples of those (``betas=0.9,0.95``), strings, and ``none`` for optional
fields. A key the config does not have is refused with the list of the valid ones.
:func:`from_dict` rebuilds a config, nested dataclasses included, from what :func:`to_dict` wrote.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterable
from typing import Any


def leaf_keys(config: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> current value of every leaf field of a (nested) dataclass config."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out.update(leaf_keys(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out


def _optional(config: Any, name: str) -> bool:
    hints = typing.get_type_hints(type(config))
    hint = hints.get(name)
    return type(None) in typing.get_args(hint) or (isinstance(hint, types.UnionType) and type(None) in hint.__args__)


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


def parse_value(key: str, text: str, current: Any, optional: bool = False, kind: type | None = None) -> Any:
    """``text`` as the type of ``current`` (or ``kind`` when ``current`` is None); errors name the key."""
    text = text.strip()
    if optional and text.lower() in ("none", "null"):
        return None
    kind = kind or type(current)
    try:
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError("expected true or false")
            return text.lower() in ("true", "1")
        if kind is int:
            number = _number(text)
            if number != int(number):
                raise ValueError("expected a whole number")
            return int(number)
        if kind is float:
            return _number(text)
        if kind is tuple:
            item = type(current[0]) if current else float
            return tuple(parse_value(key, v, None, kind=item) for v in text.strip("()[]").split(",") if v.strip())
        return text
    except ValueError as exc:
        what = str(exc) if str(exc).startswith("expected") else f"expected {_kind_name(kind, current)}"
        raise ValueError(f"{key}={text!r}: {what}{' or none' if optional else ''}") from None


def _kind_name(kind: type, current: Any) -> str:
    if kind is tuple:
        return f"a comma-separated list of {type(current[0]).__name__ if current else 'float'}"
    return {bool: "true or false", int: "a whole number", float: "a number"}.get(kind, kind.__name__)


def _set(config: Any, path: list[str], text: str, key: str) -> Any:
    head, rest = path[0], path[1:]
    value = getattr(config, head)
    if rest:
        return dataclasses.replace(config, **{head: _set(value, rest, text, key)})
    hints = typing.get_type_hints(type(config))
    kind: type | None = None
    if value is None:  # an optional field that is None now: parse by its annotation
        kind = int if "int" in str(hints.get(head)) else float
    return dataclasses.replace(config, **{head: parse_value(key, text, value, _optional(config, head), kind)})


def apply_overrides(config: Any, items: Iterable[tuple[str, str]], what: str = "this config") -> Any:
    """``config`` with each dotted key set to its text's value; an unknown key is refused with the
    valid ones, a bad value (or a dataclass's own check) names the key."""
    valid = leaf_keys(config)
    for key, text in items:
        if key not in valid:
            raise ValueError(f"unknown key {key!r} for {what}; valid keys: {', '.join(sorted(valid))}")
        try:
            config = _set(config, key.split("."), str(text), key)
        except ValueError as exc:
            raise ValueError(str(exc) if str(exc).startswith(key) else f"{key}={text}: {exc}") from None
    return config


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """An instance of the dataclass ``cls`` from :func:`to_dict`'s output: nested dataclasses rebuilt,
    lists back to tuples; unknown fields are refused, missing ones take their defaults."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {', '.join(unknown)}")
    values = {}
    for name, value in data.items():
        hint = hints.get(name)
        nested = next((a for a in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(a)), None)
        if isinstance(value, dict) and nested is not None:
            value = from_dict(typing.cast(type, nested), value)
        elif isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        values[name] = value
    return cls(**values)
