"""``soundvcm bench toy|network|pipeline|train|dist|extract|embed|quality|listen|sync``: each benchmark prints a table
(results go to BENCHMARKS.md)."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from soundvcm.cli.bench_listen import register_listen
from soundvcm.cli.bench_scale import register_scale
from soundvcm.cli.bench_vocoder import register_vocoder
from soundvcm.cli.common import add_precision_option, dim, positive_float, positive_int, save_json


def register(commands) -> None:
    bench = commands.add_parser("bench", help="run a benchmark and print its table")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    _register_toy(benches)
    _register_network(benches)
    _register_pipeline(benches)
    _register_train(benches)
    register_scale(benches)
    _register_embed(benches)
    _register_quality(benches)
    register_listen(benches)
    _register_sync(benches)
    _register_precision(benches)
    register_vocoder(benches)


def _register_toy(benches) -> None:
    toy = benches.add_parser(
        "toy",
        help="flow matching vs velocity consistency vs MeanFlow on exact Gaussian-mixture flows",
        description=(
            "Train one small network with flow matching, velocity consistency (SoundVCM) and MeanFlow (each also "
            "with p = 0 on the t = s rows) at equal CPU cost on class-conditional Gaussian mixtures whose guided "
            "flow is known exactly, over several mixture seeds; report sliced W2 to exact target samples (mean "
            "and std over seeds), average-velocity MSE, steps, CPU time per step and peak memory."
        ),
    )
    toy.add_argument("--quick", action="store_true", help="a < 60 s smoke run (one seed, 300 VCM steps)")
    toy.add_argument("--dim", type=dim, default=2, help="data dimension (default 2; 2 also writes a PNG)")
    toy.add_argument("--seeds", type=positive_int, default=None, help="mixture seeds to average over (default 5)")
    toy.add_argument("--first-seed", type=int, default=0, help="seeds are FIRST..FIRST+N-1 (default 0)")
    toy.add_argument(
        "--vcm-steps",
        type=positive_int,
        default=None,
        help="VCM training steps (default 4000); the other variants get the steps of equal CPU cost",
    )
    toy.add_argument("--workers", type=positive_int, default=2, help="processes, one thread each (default 2)")
    toy.add_argument(
        "--replay",
        type=Path,
        default=None,
        metavar="JSON",
        help="rerun a --json result with its config and step counts (bit-reproducible)",
    )
    toy.add_argument(
        "--ablation", action="store_true", help="VCM ablation (Table 2): r, p, p on t = s rows, m and w, one at a time"
    )
    toy.add_argument(
        "--fixed-point",
        action="store_true",
        help="no training: where the p = 1 adaptive weight settles on t = s rows vs the exact velocity",
    )
    toy.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the results as JSON here")
    toy.add_argument("--out", type=Path, default=Path("out/bench"), metavar="DIR", help="where plots go")
    toy.add_argument(
        "--finetune",
        action="store_true",
        help="VCM fine-tuned from a flow-matching checkpoint vs from scratch: steps to reach the scratch run's "
        "final 1-step SW2 (`train --init` on the toy; --vcm-steps sets both runs' budget)",
    )
    toy.set_defaults(func=_bench_toy)


def _register_network(benches) -> None:
    netb = benches.add_parser(
        "network",
        help="parameter count, per-NFE latency and sampler totals of a network preset",
        description="Time one network evaluation at batch 1 and 8 and the 1, 4 and 25x2 NFE samplers.",
    )
    netb.add_argument("--preset", default="small_16k", help="network preset (default small_16k)")
    netb.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    add_precision_option(netb, "the network forward (default here: fp32)")
    netb.set_defaults(precision="fp32")
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
    tb.add_argument("--device", default="cpu", help="cpu or cuda")
    add_precision_option(tb, "the network's autocast (default here: fp32)")
    tb.set_defaults(precision="fp32")
    tb.add_argument("--compile", action="store_true", help="torch.compile the network")
    tb.add_argument("--objectives", default="fm,vcm,meanflow", help="comma-separated (default fm,vcm,meanflow)")
    tb.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the results as JSON here")
    tb.set_defaults(func=_bench_train)


def _register_embed(benches) -> None:
    be = benches.add_parser("embed", help="evaluation embedding throughput on this machine (clips/s)")
    be.add_argument("--clips", type=int, default=16, help="8 s clips to embed (default 16)")
    be.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the results as JSON here")
    be.set_defaults(func=_bench_embed)


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
    bq.add_argument("--seed", type=int, default=0, help="noise and random-clip seed (default 0)")
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
    bq.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    add_precision_option(bq, "the models' encoders, network and vocoder and the ceiling row")
    bq.add_argument("--out", type=Path, default=Path("out/bench/quality"), help="output folder")
    bq.set_defaults(func=_bench_quality)


def _bench_toy(args: argparse.Namespace) -> int:
    from soundvcm.bench.toy import QUICK, ToyBenchConfig, config_from_json, run_ablation, run_toy_bench, write_json

    if args.fixed_point:
        from soundvcm.bench.fixed_point import run_fixed_point

        print("## Fixed point of the adaptive weight on t = s rows (no network)\n")
        print(run_fixed_point(args.out, seed=args.first_seed))
        return 0
    cfg = ToyBenchConfig(dim=args.dim, workers=args.workers)
    if args.quick:
        cfg = replace(cfg, **QUICK)
    if args.seeds is not None:
        cfg = replace(cfg, seeds=tuple(range(args.first_seed, args.first_seed + args.seeds)))
    elif args.first_seed:
        cfg = replace(cfg, seeds=tuple(s + args.first_seed for s in range(len(cfg.seeds))))
    if args.vcm_steps is not None:
        cfg = replace(cfg, vcm_steps=args.vcm_steps)
    if args.finetune:
        return _bench_toy_finetune(cfg, args)
    ablation = args.ablation
    if args.replay is not None:
        cfg, ablation = config_from_json(args.replay)
        cfg = replace(cfg, workers=args.workers)
    result = run_ablation(cfg) if ablation else run_toy_bench(cfg, args.out)
    title = "VCM ablation" if ablation else "Toy benchmark"
    print(f"## {title}, d={cfg.dim}, seeds {list(cfg.seeds)}, {cfg.vcm_steps} VCM steps, equal CPU cost\n")
    print(result["table"])
    if result.get("goals"):
        print("\n" + result["goals"])
    if "plot" in result:
        print(f"\nscatter plot: {result['plot']}")
    print(f"\nwall-clock: {result['wall_s']:.0f} s with {result['workers']} worker(s)")
    if args.json is not None:
        write_json(args.json, result)
        print(f"results: {args.json}")
    return 0


def _bench_toy_finetune(cfg, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from soundvcm.bench.toy_finetune import FinetuneConfig, run_finetune

    ft = FinetuneConfig(fm_steps=cfg.vcm_steps, vcm_steps=cfg.vcm_steps, every=max(10, cfg.vcm_steps // 20))
    with tqdm(total=len(cfg.seeds), desc="toy fine-tune", unit="seed") as bar:
        result = run_finetune(cfg, ft, args.out, progress=bar.update)
    print(f"## Fine-tuning from flow matching, d={cfg.dim}, seeds {list(cfg.seeds)}\n")
    print(result["table"])
    print(f"\ncurves: {result['plot']}")
    if args.json is not None:
        from soundvcm.atomic import atomic_write

        atomic_write(args.json, lambda tmp: tmp.write_text(json.dumps(result, indent=1)))
        print(f"results: {args.json}")
    return 0


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
    bad = [p for p in cfg.precisions if p not in ("auto", "fp32", "bf16")]
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


def _bench_embed(args: argparse.Namespace) -> int:
    from soundvcm.bench.embed import run_embed_bench, table

    rows = run_embed_bench(args.clips)
    print(table(rows))
    save_json(args.json, rows)
    return 0


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
    )
    doc = run_quality(cfg)
    print(doc["table"])
    print(f"\n{args.out / 'quality.json'}; figures in {args.out}")
    return 0
