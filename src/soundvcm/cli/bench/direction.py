"""``soundvcm bench direction``: does a model take direction (issue 33): texture vs seed, the prompt
swap, echoes over seeds."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from soundvcm.cli.common import add_device_option, add_precision_option, positive_float, positive_int, save_json


def register(benches) -> None:
    bd = benches.add_parser(
        "direction",
        help="does a model take direction: the clip or the seed shapes the texture, the prompt or the picture "
        "chooses the sound, echoes over seeds",
        description="On the Foley world's test clips, for each --row NAME=MODEL: the correlation of the time-varying "
        "part of log-mel spectrograms across clips (one seed) and across seeds (one clip), beside the real "
        "soundtracks and the ceiling; the prompt swap (single-material clips captioned with another material: "
        "the share of isolated impacts heard as the prompted and as the picture's material, onset accuracy; the "
        "classifier checked first on the originals and on the Foley world's swapped re-renders); the share heard "
        "as the picture's material with no prompt; detections per event, echo share and onset F1 per seed.",
    )
    bd.add_argument("--data", required=True, type=Path, help="folder written by `soundvcm data open`")
    bd.add_argument(
        "--row",
        action="append",
        default=[],
        metavar="NAME=MODEL[:G]",
        help="a model to measure (repeatable); G: its prompt guidance scale (default 0: none)",
    )
    bd.add_argument(
        "--clips", type=positive_int, default=40, help="Foley test clips for texture and echoes (default 40)"
    )
    bd.add_argument("--swap-clips", type=positive_int, default=60, help="single-material clips to swap (default 60)")
    bd.add_argument("--seeds", default="0,1,2", help="noise seeds (default 0,1,2)")
    bd.add_argument("--steps", type=positive_int, default=None, help="sampling steps (default: each model's own)")
    bd.add_argument("--duration", type=positive_float, default=4.0, help="seconds per clip (default 4)")
    add_device_option(bd)
    add_precision_option(bd, "the models' encoders, network and vocoder")
    bd.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the results as JSON here")
    bd.set_defaults(func=_bench_direction)


def _prompt_scale(model: str) -> tuple[str, float]:
    """MODEL[:G] -> (MODEL, G); a suffix that is not a number belongs to the model's name."""
    head, sep, tail = model.rpartition(":")
    if not sep:
        return model, 0.0
    try:
        return head, float(tail)
    except ValueError:
        return model, 0.0


def _bench_direction(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from soundvcm.bench.direction import DirectionConfig, run_direction, table

    rows = []
    for item in args.row:
        name, sep, model = item.partition("=")
        if not sep or not name or not model:
            raise ValueError(f"--row must be NAME=MODEL[:G], got {item!r}")
        rows.append((name, *_prompt_scale(model)))
    try:
        seeds = tuple(int(s) for s in args.seeds.split(","))
    except ValueError:
        raise ValueError(f"--seeds must be whole numbers separated by commas, got {args.seeds!r}") from None
    cfg = DirectionConfig(
        args.data, tuple(rows), None, args.clips, args.swap_clips, seeds, args.steps, args.duration, args.device,
        args.precision,
    )  # fmt: skip
    total = len(rows) * (args.clips * len(seeds) + 2 * args.swap_clips)
    with tqdm(total=total, desc="direction", unit="clip", file=sys.stderr, disable=not rows) as bar:
        results = run_direction(cfg, bar.update)
    print(table(results))
    save_json(args.json, results)
    return 0
