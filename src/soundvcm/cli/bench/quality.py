"""``soundvcm bench quality|sync|precision``: what the models and features are worth on the open test
sets (FD, KID, KL, onsets, materials), what a sync feature can tell, and what bf16 costs in accuracy."""

from __future__ import annotations

import argparse
from pathlib import Path

from soundvcm.cli.common import (
    add_device_option,
    add_precision_option,
    positive_float,
    positive_int,
    save_json,
    seed,
)


def register(benches) -> None:
    _register_quality(benches)
    _register_sync(benches)
    _register_precision(benches)


def _register_quality(benches) -> None:
    bq = benches.add_parser(
        "quality",
        help="score models against reference rows on the open test sets (FD/KID/KL, onset F1, material accuracy)",
        description="Generates for every held-out clip of `soundvcm data open`'s test splits with each --row, adds the "
        "reference rows (silence, a random training clip, the ceiling: ground truth through the latent and vocoder, "
        "and the ground truth delayed by 100 ms), scores each with `evaluate` plus event metrics on the Foley world, "
        "and writes OUT/quality.json, a table per test set, spectrogram grids and a sync plot. Rerun to resume.",
    )
    bq.add_argument("--data", required=True, type=Path, help="folder written by `soundvcm data open`")
    bq.add_argument(
        "--row",
        action="append",
        default=None,
        metavar="NAME=MODEL[:SAMPLER[:STEPS[:CFG]]]",
        help="a model row (repeatable), e.g. vcm@1=default:consistency:1 fm@25=default-fm:euler:25; "
        "default: the shipped model at 1, 2 and 4 steps",
    )
    bq.add_argument("--sets", default="foley,bbb,sfx", help="comma-separated test sets (default foley,bbb,sfx)")
    bq.add_argument("--limit", type=positive_int, default=None, help="first N clips of each test set (default all)")
    bq.add_argument("--duration", type=positive_float, default=4.0, help="seconds per clip (default 4)")
    bq.add_argument("--seed", type=seed, default=0, help="noise and random-clip seed (default 0)")
    bq.add_argument("--no-reference", action="store_true", help="skip the reference rows")
    bq.add_argument("--no-model", action="store_true", help="only the reference rows (no model row)")
    bq.add_argument(
        "--ceiling-vocoder",
        action="append",
        default=[],
        metavar="VOCODER",
        help="add a reference row 'ceiling VOCODER': the ground truth through the lite latent and this vocoder "
        "(fast: the distilled student; or a `soundvcm vocoder export` path); repeatable",
    )
    bq.add_argument(
        "--ceiling-latent",
        action="append",
        default=[],
        metavar="SET",
        help="add a reference row 'ceiling@SET': the ground truth through this encoder set's latent (lite3: the "
        "mel VAE) and HiFi-GAN, the ceiling of models that generate in it; repeatable",
    )
    add_device_option(bq)
    add_precision_option(bq, "the models' encoders, network and vocoder and the ceiling row")
    bq.add_argument("--out", type=Path, default=Path("out/bench/quality"), help="output folder")
    bq.set_defaults(func=_bench_quality)


def _bench_quality(args: argparse.Namespace) -> int:
    from soundvcm.bench.quality import QualityConfig, Row, run_quality

    if args.no_model and (args.row or args.no_reference):
        raise ValueError("--no-model leaves only the reference rows: drop --row and --no-reference")
    texts = args.row or ["vcm@1=default:consistency:1", "vcm@2=default:consistency:2", "vcm@4=default:consistency:4"]
    texts = [] if args.no_model else texts
    rows = tuple(Row.parse(t) for t in texts)
    if len({r.name for r in rows}) != len(rows):
        raise ValueError("--row names must be unique")
    sets = tuple(x.strip() for x in args.sets.split(",") if x.strip())
    cfg = QualityConfig(
        args.data,
        args.out,
        rows,
        sets,
        args.duration,
        args.limit,
        args.seed,
        not args.no_reference,
        args.device,
        args.precision,
        tuple(args.ceiling_vocoder),
        tuple(args.ceiling_latent),
    )
    doc = run_quality(cfg)
    print(doc["table"])
    print(f"\n{args.out / 'quality.json'}; figures in {args.out}")
    return 0


def _register_sync(benches) -> None:
    bs = benches.add_parser(
        "sync",
        help="A/V alignment of muxed outputs on real clips (copy and re-encode paths), read from the pictures",
    )
    bs.add_argument("folder", type=Path, help="a folder of videos")
    bs.add_argument("--start", type=positive_float, default=1.5, help="the re-encode path's start (default 1.5 s)")
    bs.add_argument("--out", type=Path, default=Path("out/bench/sync"), help="muxed outputs (default out/bench/sync)")
    bs.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the results as JSON here")
    bs.set_defaults(func=_bench_sync)


def _bench_sync(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from soundvcm.bench.mux_sync import run_sync_bench, table

    rows = run_sync_bench(args.folder, args.out, args.start)
    print(table(rows))
    save_json(args.json, [asdict(r) for r in rows])
    return 0 if all(r.in_sync for r in rows) else 1


def _register_precision(benches) -> None:
    bp = benches.add_parser("precision", help="how far the lite encoders' features move between fp32 and bf16")
    bp.add_argument("--data", required=True, type=Path, help="folder written by `soundvcm data open`")
    bp.add_argument("--encoders", default="lite2", help="lite or lite2 (default lite2)")
    bp.add_argument("--clips", type=positive_int, default=8, help="Foley test clips (default 8)")
    bp.add_argument("--duration", type=positive_float, default=4.0, help="seconds per clip (default 4)")
    bp.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the results as JSON here")
    bp.set_defaults(func=_bench_precision)


def _bench_precision(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from soundvcm.bench.precision_drift import run_precision_bench, table

    rows = run_precision_bench(args.data, args.encoders, args.clips, args.duration)
    print(table(rows, args.clips))
    save_json(args.json, [asdict(r) for r in rows])
    return 0
