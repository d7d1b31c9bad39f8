"""``soundvcm bench dist|extract``: the scale-out benchmarks (data-parallel training engines,
extraction throughput and memory by engine and dataset size)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from soundvcm.cli.common import add_precision_option, positive_float, positive_int, save_json


def register(benches) -> None:
    _register_dist(benches)
    _register_extract(benches)


def _register_dist(benches) -> None:
    db = benches.add_parser(
        "dist",
        help="data-parallel engines on 2 local CPU ranks (gloo): step time vs one process, memory per rank",
        description="One process, then 2 ranks under DDP, the flat all-reduce and FSDP2, each with the same "
        "per-rank batch, in interleaved rounds; prints step time ratios and parameter/gradient/AdamW memory per rank.",
    )
    db.add_argument("--preset", default="lite_small", help="network preset (default lite_small)")
    db.add_argument("--objective", default="vcm", help="fm, vcm or meanflow (default vcm)")
    db.add_argument("--batch", type=positive_int, default=4, help="batch per rank (default 4)")
    db.add_argument("--timed-steps", type=positive_int, default=3, help="timed steps per run (default 3)")
    db.add_argument("--rounds", type=positive_int, default=2, help="interleaved rounds (default 2)")
    db.add_argument("--threads", type=positive_int, default=1, help="CPU threads per rank (default 1)")
    db.add_argument("--engines", default="local,ddp,allreduce,fsdp", help="comma-separated (default: all four)")
    db.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the results as JSON here")
    db.set_defaults(func=_bench_dist)


def _bench_dist(args: argparse.Namespace) -> int:
    from soundvcm.bench.dist import ENGINES, DistBenchConfig, run_dist_bench, table

    engines = tuple(e.strip() for e in args.engines.split(",") if e.strip())
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        raise ValueError(f"--engines: unknown {', '.join(unknown)}; choose from {', '.join(ENGINES)}")
    cfg = DistBenchConfig(
        preset=args.preset,
        objective=args.objective,
        batch=args.batch,
        steps=args.timed_steps,
        rounds=args.rounds,
        threads=args.threads,
        engines=engines,
    )

    def progress(engine: str, result: dict) -> None:
        print(f"  {engine}: step {result['step_s']:.3f} s", file=sys.stderr, flush=True)

    rows = run_dist_bench(cfg, progress)
    print(table(rows, cfg))
    save_json(args.json, rows)
    return 0


def _register_extract(benches) -> None:
    eb = benches.add_parser(
        "extract",
        help="extraction rows/s and peak RSS by engine (local, ray) as the same set is listed x1, x10, x100",
    )
    eb.add_argument("--base-rows", type=positive_int, default=4, help="distinct synthetic clips (default 4)")
    eb.add_argument("--scales", default="1,10,100", help="how many times the set is listed (default 1,10,100)")
    eb.add_argument("--engines", default="local,ray", help="comma-separated: local, ray (default both)")
    eb.add_argument("--duration", type=positive_float, default=8.0, help="seconds per clip (default 8)")
    eb.add_argument("--cpus", type=positive_int, default=2, help="CPUs of the local Ray instance (default 2)")
    add_precision_option(eb, "the encoders")
    eb.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the results as JSON here")
    eb.set_defaults(func=_bench_extract)


def _bench_extract(args: argparse.Namespace) -> int:
    from soundvcm.bench.extract import ExtractBenchConfig, run_extract_bench, table

    engines = tuple(e.strip() for e in args.engines.split(",") if e.strip())
    if not engines or any(e not in ("local", "ray") for e in engines):
        raise ValueError(f"--engines: choose from local, ray (got {args.engines!r})")
    try:
        scales = tuple(int(x) for x in args.scales.split(","))
    except ValueError:
        raise ValueError(f"--scales takes comma-separated whole numbers, got {args.scales!r}") from None
    if "ray" in engines:
        from soundvcm.scale.ray_engine import require_ray

        require_ray()
    cfg = ExtractBenchConfig(
        base_rows=args.base_rows,
        scales=scales,
        engines=engines,
        duration=args.duration,
        cpus=args.cpus,
        precision=args.precision,
    )

    def progress(row: dict) -> None:
        print(
            f"  {row['engine']} x{row['scale']}: {row['rows_per_s']:.2f} rows/s, {row['peak_rss_mb']:.0f} MB",
            file=sys.stderr,
            flush=True,
        )

    rows = run_extract_bench(cfg, progress)
    print(table(rows, cfg))
    save_json(args.json, rows)
    return 0
