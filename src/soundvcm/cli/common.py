"""Argument types shared by the commands."""

from __future__ import annotations

import argparse
import math

from soundvcm.device import DEVICES
from soundvcm.network.config import PRESETS
from soundvcm.precision import PRECISIONS

NETWORK_PRESET_NAMES = tuple(PRESETS)  # from the one preset table, without importing torch


def finite_float(text: str) -> float:
    """A number that is not NaN or infinite (``float`` alone accepts 'nan' and 'inf')."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def nonnegative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def add_precision_option(parser, what: str = "every stage") -> None:
    """``--precision auto|fp32|bf16``, worded the same on every command (:mod:`soundvcm.precision`)."""
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help=f"numeric precision of {what}: auto (default: bf16 on a GPU, and on a CPU only where it computes bf16 "
        "natively and a short measured check finds it faster; fp32 elsewhere), fp32 or bf16",
    )


def add_out_argument(parser, help: str) -> None:
    """``--out PATH``: every command names what it writes this way (issue 36). The positional form
    of earlier versions is still read (hidden); :func:`soundvcm.cli.main` merges the two."""
    from pathlib import Path

    parser.add_argument("--out", type=Path, default=None, help=f"{help} (required)")
    parser.add_argument("out_positional", nargs="?", type=Path, default=None, help=argparse.SUPPRESS)


def device_name(text: str) -> str:
    """``--device``: checked when the command line is parsed (:func:`soundvcm.device.check_device`)."""
    from soundvcm.device import check_device

    try:
        return check_device(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_device_option(parser, default: str = "auto", what: str = "") -> None:
    """``--device``, worded and checked the same on every command."""
    where = f"{what or 'where to run'}: {DEVICES} (auto: cuda, then mps, then cpu; default {default})"
    parser.add_argument("--device", type=device_name, default=default, help=where)


MAX_SEED = 2**63 - 1


def seed(text: str) -> int:
    """A seed torch and numpy both take: a whole number in [0, 2^63 - 1]."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be a whole number from 0 to 2^63 - 1, got {text}")
    return value


MAX_SAMPLING_STEPS = 1000


def sampling_steps(text: str) -> int:
    """Sampling steps: 1 to 1000 (a flow-matching model converges long before; more is a typo)."""
    value = positive_int(text)
    if value > MAX_SAMPLING_STEPS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_SAMPLING_STEPS}, got {text}")
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


def add_engine_options(parser, what: str) -> None:
    """--engine local|ray and Ray's cluster options (extract and generate)."""
    group = parser.add_argument_group(
        "engine",
        f"--engine ray {what} on Ray Data (install the [scale] extra): decoding on CPU workers, the models "
        "in an actor pool (one actor per GPU when there are GPUs); resumable; failed rows are reported, not fatal",
    )
    group.add_argument("--engine", choices=("local", "ray"), default="local", help="local (default) or ray")
    group.add_argument(
        "--ray-address", default=None, metavar="ADDR", help="a running Ray cluster (default: start a local one)"
    )
    group.add_argument(
        "--ray-cpus", type=positive_int, default=None, help="CPUs of the local Ray instance (default all)"
    )
    group.add_argument(
        "--actors", type=positive_int, default=None, help="model actors (default: one per GPU, else one per 8 CPUs)"
    )


def check_engine_options(args) -> None:
    """Ray's options only go with --engine ray."""
    if args.engine != "ray" and (args.ray_address or args.ray_cpus or args.actors):
        raise ValueError("--ray-address/--ray-cpus/--actors go with --engine ray")


def save_json(path, rows) -> None:
    """A benchmark's ``--json PATH`` (nothing when not given), written atomically."""
    if path is None:
        return
    import json
    from pathlib import Path

    from soundvcm.atomic import atomic_write

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(Path(path), lambda tmp: tmp.write_text(json.dumps(rows, indent=2)))
