"""``soundvcm doctor``: the machine, the precision chosen for each stage and how fast each runs (paste it
into a bug report)."""

from __future__ import annotations

import argparse
from pathlib import Path

from soundvcm.cli.common import add_device_option, positive_int, save_json


def register(commands) -> None:
    doc = commands.add_parser(
        "doctor",
        help="print the torch build, CPU capability, threads and the precision of each stage (--bench: time them)",
        description="What to paste into a bug report, in seconds: versions, the CPU (PyTorch's kernel level, native "
        "bf16, cores, threads) and the precision `auto` chooses per stage with the kernel checks it rests on. "
        "--bench also times each real stage of a model in fp32 and bf16, in interleaved rounds (a few seconds per "
        "stage), with hints wherever auto's choice is slower.",
    )
    doc.add_argument("--model", default="default", help="model whose stages --bench times (default: the shipped one)")
    doc.add_argument("--bench", action="store_true", help="also time each real stage in fp32 and bf16")
    doc.add_argument("--no-bench", action="store_true", help=argparse.SUPPRESS)  # the default since issue 35
    doc.add_argument(
        "--remeasure", action="store_true", help="measure the kernel checks again (forget the remembered ones)"
    )
    add_device_option(doc)
    doc.add_argument("--repeats", type=positive_int, default=5, help="--bench: rounds per stage (default 5)")
    doc.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the stage timings as JSON")
    doc.set_defaults(func=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    from soundvcm.doctor import diagnose, render

    report = diagnose(args.model if args.bench else None, args.device, args.repeats, args.remeasure)
    print(render(report))
    save_json(args.json, {"lines": report.lines, "hints": report.hints, "stages": report.stages})
    return 0
