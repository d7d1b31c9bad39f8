"""The ``soundvcm`` command line: thin argument parsing over the library, one module per command.

soundvcm generate VIDEO|DIR|TSV [--prompt T] [--negative-prompt T] [--steps N] [--seed S] [--duration D]
                  [--model PATH] [--out DIR] [--image PATH] [--full] [--profile] [--device auto|cpu|cuda|mps]
soundvcm weights list | download NAME... | verify NAME...
soundvcm model init --preset P [--encoders SET] [--objective O] --out PATH
soundvcm convert mmaudio IN.pth OUT
soundvcm bench toy|network|pipeline ...
"""

from __future__ import annotations

import argparse
import sys

from soundvcm import __version__
from soundvcm.cli import (
    bench,
    convert,
    curves,
    data,
    demo,
    doctor,
    ema,
    evaluate,
    extract,
    generate,
    latent,
    model,
    train,
    vocoder,
    weights,
)
from soundvcm.cli.common import NETWORK_PRESET_NAMES

COMMANDS = (
    generate,
    demo,
    extract,
    train,
    ema,
    curves,
    evaluate,
    data,
    model,
    weights,
    convert,
    bench,
    doctor,
    vocoder,
    latent,
)


class Parser(argparse.ArgumentParser):
    """argparse with user errors in one line: a bad value names its option and the help to read;
    only a misspelled or missing option shows the command's usage as well."""

    def error(self, message: str):
        if "unrecognized arguments" in message or "required" in message:
            super().error(message)
        self.exit(2, f"soundvcm: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="soundvcm",
        description="SoundVCM: velocity consistency models for few-step video-to-audio generation.",
    )
    parser.add_argument("--version", action="version", version=f"soundvcm {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(commands)
    return parser


def _mark_leaves(parser: argparse.ArgumentParser) -> None:
    """Give every subcommand's parser a default ``_parser`` (itself), so errors show its usage."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        parser.set_defaults(_parser=parser)
    for action in subs:
        for child in action.choices.values():
            _mark_leaves(child)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C: the same clean-up runs (temporaries removed)."""


def _terminate(signum, frame) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    parser = build_parser()
    _mark_leaves(parser)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # a misspelled option: the subcommand's usage, not the top level's
        getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    from soundvcm.allocator import tune_malloc

    tune_malloc()  # before any tensor: freed activations are reused, not re-faulted (allocator.py)
    try:
        return args.func(args)
    except (ValueError, OSError) as exc:  # bad input, missing files, bad weights: one line, no traceback
        print(f"soundvcm: error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        print("terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


__all__ = ["NETWORK_PRESET_NAMES", "build_parser", "main"]
