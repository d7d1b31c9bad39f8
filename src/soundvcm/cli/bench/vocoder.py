"""``soundvcm bench vocoder``: cold and warm vocoding per process, one pass against windows (issue 22);
with ``--data``, each vocoder's resynthesis against the true mel (issue 35)."""

from __future__ import annotations

import argparse
from pathlib import Path

from soundvcm.cli.common import add_precision_option, positive_int


def register(benches) -> None:
    bv = benches.add_parser(
        "vocoder",
        help="each vocoder's first and second call per process; with --data, its resynthesis error",
        description="Each setting in a fresh process: the cold (first) and warm (second) time of vocoding FRAMES "
        "random mel frames (690: 8 s), in one pass (window 0) and in windows of N + 2 x 16 frames. With --data: "
        "the log-mel L1 of each vocoder's resynthesis of test clips to their true mel and to HiFi-GAN V1's "
        "(fp32; the bar for a lighter vocoder is V1's + 0.03).",
    )
    bv.add_argument(
        "--data", type=Path, default=None, help="folder written by `soundvcm data open`: add the error table"
    )
    bv.add_argument("--clips", type=positive_int, default=20, help="test clips per set for --data (default 20)")
    bv.add_argument("--frames", type=positive_int, default=690, help="mel frames (default 690: 8 s)")
    bv.add_argument("--windows", default="0,256,128,64", help="window lengths, 0 = one pass (default 0,256,128,64)")
    bv.add_argument(
        "--vocoders",
        default="hifigan",
        help="comma-separated vocoders: hifigan, fast, or `soundvcm vocoder export` stems (default hifigan)",
    )
    bv.add_argument(
        "--stages",
        action="store_true",
        help="also time HiFi-GAN V1 cut after 0-4 upsampling stages (160 frames, fp32 and bf16, this process)",
    )
    add_precision_option(bv, "the vocoder")
    bv.set_defaults(func=_bench_vocoder)


def _bench_vocoder(args: argparse.Namespace) -> int:
    import torch

    from soundvcm.bench.vocoder_cold import run, table
    from soundvcm.precision import cpu_model

    windows = tuple(int(w) for w in args.windows.split(",") if w.strip())  # empty: no timing
    if any(w < 0 for w in windows):
        raise ValueError("--windows are frame counts >= 0 (0: one pass)")
    print(
        f"CPU: {cpu_model()}, capability {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads"
    )
    vocoders = tuple(v.strip() for v in args.vocoders.split(",") if v.strip())
    if windows:
        print(table(run(windows, args.frames, args.precision, vocoders)))
    if args.stages:
        from soundvcm.bench.vocoder_cold import stage_table, stage_times

        print("HiFi-GAN V1 cut after k upsampling stages, 160 frames, best of 5 (s):")
        print(stage_table({"fp32": stage_times(), "bf16 autocast": stage_times(bf16=True)}))
    if args.data is not None:
        from soundvcm.bench import vocoder_quality

        rows = vocoder_quality.run(args.data, vocoders, args.clips)
        print(f"resynthesis of the first {args.clips} test clips of each set, fp32:")
        print(vocoder_quality.table(rows))
    return 0
