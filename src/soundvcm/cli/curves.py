"""``soundvcm curves``: training and validation curves of runs in one PNG."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(commands) -> None:
    cu = commands.add_parser("curves", help="plot training and validation curves of runs into one PNG")
    cu.add_argument(
        "runs", nargs="+", metavar="[NAME=]RUN", help="run folders (`soundvcm train --out`), optionally named"
    )
    cu.add_argument("--out", type=Path, default=Path("out/curves.png"), help="PNG path (default out/curves.png)")
    cu.set_defaults(func=_curves)


def _curves(args: argparse.Namespace) -> int:
    from soundvcm.training.curves import plot_curves

    runs = {}
    for item in args.runs:
        name, sep, path = item.partition("=")
        runs[name if sep else Path(item).name] = Path(path if sep else item)
    print(plot_curves(runs, args.out))
    return 0
