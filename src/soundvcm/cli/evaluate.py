"""``soundvcm evaluate``: generated audio scored against ground truth (av-benchmark keys)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from soundvcm.cli.common import positive_float


def register(commands) -> None:
    ev = commands.add_parser(
        "evaluate",
        help="score generated audio against ground truth (av-benchmark keys; offline aisfx metrics)",
        description="Pairs files by stem (NAME-K predictions pair with NAME), caches ground-truth embeddings, and "
        "writes FD-AISFX, KL-AISFX, ISC-AISFX and Onset-Lag-ms plus a report of unpaired, short and unreadable files. "
        "With the paper's embedder weights present it adds FD-PANN, KL-PANNS-softmax, ISC-PANNS, FD-VGG and the "
        "PaSST keys; with --video, IB-Score and DeSync. Keys that could not be computed are listed with the reason.",
    )
    ev.add_argument("--pred", required=True, type=Path, help="folder of generated audio (wav/flac/...)")
    ev.add_argument("--gt", required=True, type=Path, help="folder of ground-truth audio, or an embedding cache file")
    ev.add_argument(
        "--video",
        type=Path,
        default=None,
        help="folder of the source videos: adds IB-Score and DeSync (needs `soundvcm weights download "
        "imagebind_huge synchformer`)",
    )
    ev.add_argument("--audio-length", type=positive_float, default=8.0, help="seconds compared (default 8)")
    ev.add_argument("--out", type=Path, default=None, help="JSON output (default PRED/output_metrics.json)")
    ev.set_defaults(func=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from soundvcm.atomic import atomic_write
    from soundvcm.evaluation.evaluate import evaluate

    result = evaluate(args.pred, args.gt, args.audio_length, args.video)
    out = args.out or args.pred / "output_metrics.json"
    atomic_write(out, lambda tmp: tmp.write_text(json.dumps(result, indent=2)))
    for key, value in result.items():
        if key != "report":
            print(f"{key:16s} {value:.4f}")
    print(f"pairs: {result['report']['pairs']}; full report: {out}")
    return 0
