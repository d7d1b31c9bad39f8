"""``soundvcm bench listen``: condition sensitivity of models and the sync probe (issue 23)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from soundvcm.cli.common import add_precision_option, positive_float, positive_int, save_json


def register(benches) -> None:
    bl = benches.add_parser(
        "listen",
        help="does a model follow its conditions (spectrogram correlations across clips, seeds, swaps); "
        "--probe: what each sync feature can tell about impacts",
        description="Foley world test clips with their captions. For each --row NAME=MODEL: the log-mel correlation "
        "of outputs for different clips with one seed, for one clip with two seeds, and with clip A's conditions "
        "but B's sync tokens or B's text (to A's and to B's outputs), beside the real soundtracks'. --probe trains "
        "a small reader of impacts from each candidate sync feature on training clips and scores it on test clips "
        "(onset F1) and on Big Buck Bunny (against onsets detected in its soundtrack).",
    )
    bl.add_argument("--data", required=True, type=Path, help="folder written by `soundvcm data open`")
    bl.add_argument("--row", action="append", default=[], metavar="NAME=MODEL", help="a model to measure (repeatable)")
    bl.add_argument("--clips", type=positive_int, default=20, help="Foley test clips for the correlations (default 20)")
    bl.add_argument("--seeds", default="0,1", help="the two noise seeds (default 0,1)")
    bl.add_argument("--duration", type=positive_float, default=4.0, help="seconds per clip (default 4)")
    bl.add_argument("--probe", action="store_true", help="also run the sync probe")
    bl.add_argument("--probe-train", type=positive_int, default=400, help="probe training clips (default 400)")
    bl.add_argument("--probe-test", type=positive_int, default=150, help="probe test clips (default 150)")
    bl.add_argument(
        "--probe-world",
        choices=("foley", "directed"),
        default="foley",
        help="the probe's training and test clips: the plain Foley world, or the directed one (filmed backdrops, "
        "camera motion, lighting, noise; issue 33) (default foley)",
    )
    add_precision_option(bl, "the models' encoders, network and vocoder")
    bl.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the results as JSON here")
    bl.set_defaults(func=_bench_listen)


def _bench_listen(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from soundvcm.bench.listen import ListenConfig, run_listen, table

    rows = []
    for text in args.row:
        name, sep, model = text.partition("=")
        if not sep or not name or not model:
            raise ValueError(f"bad --row {text!r}: use NAME=MODEL, e.g. vcm=default")
        rows.append((name, model))
    try:
        seeds = tuple(int(s) for s in args.seeds.split(","))
    except ValueError:
        raise ValueError(f"--seeds takes two whole numbers, e.g. 0,1; got {args.seeds!r}") from None
    if len(seeds) != 2 or seeds[0] == seeds[1]:
        raise ValueError(f"--seeds takes two different seeds, e.g. 0,1; got {args.seeds!r}")
    if not rows and not args.probe:
        raise ValueError("nothing to measure: give --row NAME=MODEL and/or --probe")
    cfg = ListenConfig(
        args.data,
        tuple(rows),
        args.clips,
        (seeds[0], seeds[1]),
        args.duration,
        args.probe,
        args.probe_train,
        args.probe_test,
        args.precision,
        args.probe_world,
    )
    total = len(rows) + (args.probe_train + args.probe_test + 17 if args.probe else 0)
    with tqdm(total=total, desc="listen", file=sys.stderr, disable=None) as bar:
        doc = run_listen(cfg, bar.update)
    print(table(doc))
    save_json(args.json, doc)
    return 0
