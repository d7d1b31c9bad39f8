"""``soundvcm bench toy``: the objectives themselves, FM vs VCM vs MeanFlow on exact Gaussian-mixture
flows (their known answers make the comparison exact)."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from soundvcm.cli.common import (
    dim,
    positive_int,
)


def register(benches) -> None:
    _register_toy(benches)


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
