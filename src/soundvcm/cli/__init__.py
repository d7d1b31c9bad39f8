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

# the commands as the architecture groups them (docs/ARCHITECTURE.md), in the order --help lists them
GROUPS = (
    ("make sound", (generate, demo)),
    ("data and training", (data, extract, train, ema, curves, latent, vocoder)),
    ("evaluation and benches", (evaluate, bench)),
    ("models and tools", (model, weights, convert, doctor)),
)
COMMANDS = tuple(command for _, commands in GROUPS for command in commands)


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
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"soundvcm {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    for command in COMMANDS:
        command.register(commands)
    # --help lists the commands by group (argparse's own list is flat)
    helps = {a.dest: a.help for a in commands._choices_actions}
    lines = []
    for title, group in GROUPS:
        lines.append(f"{title}:")
        for command in group:
            name = command.__name__.rsplit(".", 1)[-1]
            lines.append(f"  {name:10s} {helps.get(name, '')}")
    parser.epilog = "\n".join(lines) + "\n\nsoundvcm COMMAND --help shows a command's options."
    commands.help = argparse.SUPPRESS
    commands._choices_actions.clear()
    parser.usage = "soundvcm [-h] [--version] COMMAND ..."  # after the commands took their own prog
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
    if hasattr(args, "out_positional"):  # --out, or the positional OUT of earlier versions
        if args.out is not None and args.out_positional is not None:
            getattr(args, "_parser", parser).error("give the output once: --out OUT")
        args.out = args.out or args.out_positional
        if args.out is None:
            getattr(args, "_parser", parser).error("the following arguments are required: --out")
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
