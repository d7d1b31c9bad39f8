"""Dotted ``key=value`` overrides of an objective's config, checked against its dataclasses.

Every Alg. 1 hyperparameter lives in a (nested) frozen dataclass: ``guidance.scale`` (w),
``guidance.mix`` (m), ``guidance.t_max``, ``guidance.dropout.row_prob`` (phi), ``lambda_init`` /
``lambda_end`` (the lambda schedule), ``time.equal_ratio`` (the share of t = s rows, 1 - r),
``time.mean`` / ``time.std`` (logit-normal t), ``adaptive_p`` / ``adaptive_eps`` (Eq. 11) and
their t = s variants. :func:`objective_keys` lists what an objective takes; :func:`apply_overrides`
returns a new config, refusing unknown keys (with the list of valid ones) and values of the wrong
type (naming the key).
"""

from __future__ import annotations

import dataclasses
from typing import Any

SKIP: tuple[str, ...] = ()  # fields that are not hyperparameters (none: precision is the network call's)


def objective_keys(config: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> current value of every leaf field of a (nested) dataclass config."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        if f.name in SKIP:
            continue
        value = getattr(config, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out.update(objective_keys(value, key + "."))
        else:
            out[key] = value
    return out


def _optional(config: Any, name: str) -> bool:
    annotation = {f.name: f.type for f in dataclasses.fields(config)}[name]
    return "None" in str(annotation)


def _parse(key: str, text: str, current: Any, optional: bool) -> Any:
    if optional and text.lower() in ("none", "null"):
        return None
    try:
        if isinstance(current, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return text.lower() in ("true", "1")
        if isinstance(current, int):
            number = float(text)
            if number != int(number):
                raise ValueError
            return int(number)
        return float(text)  # floats, and optional floats that are None now
    except ValueError:
        kinds = {bool: "true or false", int: "a whole number"}
        kind = kinds.get(type(current), "a number")
        raise ValueError(f"{key}={text!r}: expected {kind}{' or none' if optional else ''}") from None


def _set(config: Any, path: list[str], text: str, key: str) -> Any:
    head, rest = path[0], path[1:]
    value = getattr(config, head)
    if rest:
        return dataclasses.replace(config, **{head: _set(value, rest, text, key)})
    return dataclasses.replace(config, **{head: _parse(key, text, value, _optional(config, head))})


def apply_overrides(config: Any, overrides: dict[str, str] | tuple[tuple[str, str], ...], objective: str = "") -> Any:
    """``config`` with each dotted key set to its value (parsed by the field's type)."""
    items = overrides.items() if isinstance(overrides, dict) else overrides
    valid = objective_keys(config)
    for key, text in items:
        if key not in valid:
            what = f"objective {objective!r}" if objective else "this objective"
            raise ValueError(f"unknown key {key!r} for {what}; valid keys: {', '.join(sorted(valid))}")
        try:
            config = _set(config, key.split("."), str(text), key)
        except ValueError as exc:  # a __post_init__ check of the dataclass, or a parse error
            raise ValueError(str(exc) if str(exc).startswith(key) else f"{key}={text}: {exc}") from None
    return config
