"""``soundvcm doctor``: the machine, the precision chosen for each stage and how fast each runs (paste it
into a bug report)."""

from __future__ import annotations

import argparse
from pathlib import Path

from soundvcm.cli.common import add_device_option, positive_int, save_json


def register(commands) -> None:
    doc = commands.add_parser(
        "doctor",
        help="print the torch build, CPU capability, threads, the precision of each stage and a micro-benchmark",
        description="What to paste into a bug report: versions, the CPU (PyTorch's kernel level, native bf16, "
        "cores, threads), the precision `auto` chooses per stage, and each real stage of a model timed in fp32 "
        "and bf16 (a few seconds per stage), with hints wherever a choice is slow.",
    )
    doc.add_argument("--model", default="default", help="model whose stages are timed (default: the shipped default)")
    doc.add_argument("--no-bench", action="store_true", help="skip the stage micro-benchmark")
    add_device_option(doc)
    doc.add_argument("--repeats", type=positive_int, default=3, help="timed calls per stage and precision (default 3)")
    doc.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the stage timings as JSON")
    doc.set_defaults(func=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    from soundvcm.doctor import diagnose, render

    report = diagnose(None if args.no_bench else args.model, args.device, args.repeats)
    print(render(report))
    save_json(args.json, {"lines": report.lines, "hints": report.hints, "stages": report.stages})
    return 0
