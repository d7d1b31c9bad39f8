"""``soundvcm bench vocoder``: cold and warm vocoding per process, one pass against windows (issue 22)."""

from __future__ import annotations

import argparse

from soundvcm.cli.common import add_precision_option, positive_int


def register(benches) -> None:
    bv = benches.add_parser(
        "vocoder",
        help="HiFi-GAN's first and second call per process, in one pass and in windows of one length",
        description="Each setting in a fresh process: the cold (first) and warm (second) time of vocoding FRAMES "
        "random mel frames (690: 8 s), in one pass (window 0) and in windows of N + 2 x 16 frames.",
    )
    bv.add_argument("--frames", type=positive_int, default=690, help="mel frames (default 690: 8 s)")
    bv.add_argument("--windows", default="0,256,128,64", help="window lengths, 0 = one pass (default 0,256,128,64)")
    bv.add_argument(
        "--vocoders",
        default="hifigan",
        help="comma-separated vocoders: hifigan, fast, or `soundvcm vocoder export` stems (default hifigan)",
    )
    add_precision_option(bv, "the vocoder")
    bv.set_defaults(func=_bench_vocoder)


def _bench_vocoder(args: argparse.Namespace) -> int:
    import torch

    from soundvcm.bench.vocoder_cold import run, table
    from soundvcm.precision import cpu_model

    windows = tuple(int(w) for w in args.windows.split(",") if w.strip())
    if any(w < 0 for w in windows):
        raise ValueError("--windows are frame counts >= 0 (0: one pass)")
    print(
        f"CPU: {cpu_model()}, capability {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads"
    )
    vocoders = tuple(v.strip() for v in args.vocoders.split(",") if v.strip())
    print(table(run(windows, args.frames, args.precision, vocoders)))
    return 0
