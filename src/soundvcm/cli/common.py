"""Argument types shared by the commands."""

from __future__ import annotations

import argparse

NETWORK_PRESET_NAMES = (
    "small_16k", "small_44k", "medium_44k", "large_44k", "large_44k_v2", "lite", "lite_small", "debug", "debug_v2",
)  # fmt: skip
"""Listed in help texts without importing torch; tests check it equals ``NETWORK_PRESETS``."""


def positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def dim(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"dimension must be >= 1, got {text}")
    return value
