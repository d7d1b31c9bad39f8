"""``soundvcm bench network|pipeline|train|embed``: how fast each part runs on this machine (latency
per NFE and sampler, per-stage pipeline times, training steps/s, embedder throughput)."""

from __future__ import annotations

import argparse
from pathlib import Path

from soundvcm.cli.common import (
    add_device_option,
    add_precision_option,
    positive_float,
    positive_int,
    save_json,
)
from soundvcm.precision import PRECISIONS


def register(benches) -> None:
    _register_network(benches)
    _register_pipeline(benches)
    _register_train(benches)
    _register_embed(benches)
    _register_long(benches)


def _register_network(benches) -> None:
    netb = benches.add_parser(
        "network",
        help="parameter count, per-NFE latency and sampler totals of a network preset",
        description="Time one network evaluation at batch 1 and 8 and the 1, 4 and 25x2 NFE samplers.",
    )
    netb.add_argument("--preset", default="small_16k", help="network preset (default small_16k)")
    add_device_option(netb)
    add_precision_option(netb, "the network forward")
    netb.add_argument("--compile", action="store_true", help="torch.compile the network")
    netb.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement (default 3)")
    netb.add_argument(
        "--reference-mmaudio",
        default=None,
        metavar="DIR",
        help="time MMAudio's own network in the same run (DIR: a checkout of MMAudio's source)",
    )
    netb.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the results as JSON here")
    netb.set_defaults(func=_bench_network)


def _bench_network(args: argparse.Namespace) -> int:
    from soundvcm.bench.network import NetworkBenchConfig, run_network_bench, table

    cfg = NetworkBenchConfig(
        preset=args.preset,
        device=args.device,
        precision=args.precision,
        compile=args.compile,
        repeats=args.repeats,
        reference_mmaudio=args.reference_mmaudio,
    )
    rows = run_network_bench(cfg)
    print(table(rows))
    save_json(args.json, rows)
    return 0


def _register_pipeline(benches) -> None:
    pb = benches.add_parser(
        "pipeline",
        help="per-stage times of generate at 1 NFE and 25x2 NFE (lite encoders; lite and small_16k networks)",
        description="Times decode, visual, sync, text, network, latent decode, vocoder and mux for one clip "
        "(model loading excluded), for random-initialised networks sized for the lite encoders.",
    )
    pb.add_argument("--video", default=None, help="clip to use (default: a synthesised 8 s 720p H.264 clip)")
    pb.add_argument("--duration", type=positive_float, default=8.0, help="seconds (default 8)")
    pb.add_argument(
        "--networks",
        default="lite,small_16k",
        help="comma-separated presets, random-initialised (default lite,small_16k; '' for none)",
    )
    pb.add_argument(
        "--models", default="", help="comma-separated trained models (names or paths), e.g. default (default none)"
    )
    pb.add_argument(
        "--precisions",
        default="auto",
        help="comma-separated precisions to time, from auto, fp32, bf16 (default auto); each row names its plan",
    )
    pb.add_argument("--repeats", type=int, default=2, help="timed runs per setting after a warm-up (default 2)")
    pb.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    pb.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the results as JSON here")
    pb.set_defaults(func=_bench_pipeline)


def _bench_pipeline(args: argparse.Namespace) -> int:
    import torch

    from soundvcm.bench.pipeline import PipelineBenchConfig, run_pipeline_bench, table

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.repeats < 1:
        raise ValueError("--repeats must be >= 1")
    cfg = PipelineBenchConfig(
        video=args.video,
        duration=args.duration,
        networks=tuple(n.strip() for n in args.networks.split(",") if n.strip()),
        repeats=args.repeats,
        models=tuple(n.strip() for n in args.models.split(",") if n.strip()),
        precisions=tuple(p.strip() for p in args.precisions.split(",") if p.strip()),
    )
    bad = [p for p in cfg.precisions if p not in PRECISIONS]
    if bad or not cfg.precisions:
        raise ValueError(f"--precisions takes auto, fp32 and bf16, got {args.precisions!r}")
    rows = run_pipeline_bench(cfg)
    from soundvcm.precision import cpu_capability, cpu_model

    print(
        f"## Pipeline, {cfg.duration:g} s clip, CPU ({cpu_model()}, {cpu_capability()}), "
        f"{torch.get_num_threads()} threads\n"
    )
    print(table(rows))
    save_json(args.json, rows)
    return 0


def _register_train(benches) -> None:
    tb = benches.add_parser(
        "train",
        help="samples/s and peak memory of one training step: FM, VCM and MeanFlow in the same run",
    )
    tb.add_argument("--preset", default="small_16k", help="network preset (default small_16k)")
    tb.add_argument("--batch", type=int, default=8, help="batch size (default 8)")
    tb.add_argument(
        "--timed-steps", type=positive_int, default=2, help="timed steps per objective after a warm-up (default 2)"
    )
    add_device_option(tb)
    add_precision_option(tb, "the network's autocast")
    tb.add_argument("--compile", action="store_true", help="torch.compile the network")
    tb.add_argument("--objectives", default="fm,vcm,meanflow", help="comma-separated (default fm,vcm,meanflow)")
    tb.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the results as JSON here")
    tb.set_defaults(func=_bench_train)


def _bench_train(args: argparse.Namespace) -> int:
    from soundvcm.bench.train import TrainBenchConfig, run_train_bench, table

    cfg = TrainBenchConfig(
        preset=args.preset,
        batch=args.batch,
        steps=args.timed_steps,
        device=args.device,
        precision=args.precision,
        compile=args.compile,
        objectives=tuple(o.strip() for o in args.objectives.split(",") if o.strip()),
    )
    rows = run_train_bench(cfg)
    print(table(rows, cfg))
    save_json(args.json, rows)
    return 0


def _register_embed(benches) -> None:
    be = benches.add_parser("embed", help="evaluation embedding throughput on this machine (clips/s)")
    be.add_argument("--clips", type=int, default=16, help="8 s clips to embed (default 16)")
    be.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the results as JSON here")
    be.set_defaults(func=_bench_embed)


def _bench_embed(args: argparse.Namespace) -> int:
    from soundvcm.bench.embed import run_embed_bench, table

    rows = run_embed_bench(args.clips)
    print(table(rows))
    save_json(args.json, rows)
    return 0


def _register_long(benches) -> None:
    bl = benches.add_parser(
        "long",
        help="peak memory of generate --full as the video grows (synthetic clips, a fresh process each)",
        description="For each length in --minutes, writes a synthetic clip, runs `soundvcm generate CLIP --full` "
        "in a fresh process and samples its resident memory; prints each run's peak, its ratio to the first "
        "run's, and the memory at 25/50/75/100 %% of the run.",
    )
    bl.add_argument("--minutes", default="1,10", help="video lengths in minutes (default 1,10)")
    bl.add_argument("--model", default="default", help="the model to run (default: the shipped default)")
    bl.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the results as JSON here")
    bl.set_defaults(func=_bench_long)


def _bench_long(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from soundvcm.bench.long import run_long, table

    try:
        minutes = [positive_float(m) for m in args.minutes.split(",")]
    except argparse.ArgumentTypeError as exc:
        raise ValueError(f"--minutes: {exc}") from None
    runs = run_long(minutes, args.model)
    print(table(runs))
    save_json(args.json, [asdict(r) for r in runs])
    return 0
