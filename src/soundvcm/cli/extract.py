"""``soundvcm extract``: media listed in a TSV -> a sharded feature cache (resumable, torchrun-parallel)."""

from __future__ import annotations

import argparse
from pathlib import Path

from soundvcm.cli.common import (
    add_device_option,
    add_engine_options,
    add_precision_option,
    check_engine_options,
    positive_float,
)


def register(commands) -> None:
    ext = commands.add_parser(
        "extract",
        help="turn media listed in a TSV into a sharded feature cache (resumable; parallel under torchrun)",
        description="Rows are 'path<TAB>caption'. Videos give video-text-audio sets, audio files text-audio sets. "
        "Rerun the same command to resume; under torchrun each rank writes its own shards.",
    )
    ext.add_argument("--input", required=True, type=Path, help="TSV of media paths and captions")
    ext.add_argument("--out", required=True, type=Path, help="cache folder")
    ext.add_argument(
        "--encoders",
        default="lite2",
        help="encoder set: lite2 (default: the shipped models'), lite3 (lite2's conditions, a 20-channel mel VAE "
        "latent; issue 33), lite (the first lite models'), mmaudio_16k, mmaudio_44k",
    )
    ext.add_argument("--duration", type=positive_float, default=8.0, help="seconds per clip (default 8)")
    ext.add_argument("--rows-per-shard", type=int, default=64, help="rows per shard file (default 64)")
    add_device_option(ext)
    add_precision_option(ext, "the encoders (recorded in the cache's meta.json)")
    add_engine_options(ext, "extracts")
    ext.set_defaults(func=_extract)


def _extract(args: argparse.Namespace) -> int:
    import torch

    from soundvcm.data.extract import extract

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if args.rows_per_shard < 1:
        raise ValueError("--rows-per-shard must be >= 1")
    check_engine_options(args)
    if args.engine == "ray":
        from soundvcm.scale.ray_engine import extract_ray, require_ray

        require_ray()
        meta, usable = extract_ray(
            args.input,
            args.out,
            args.encoders,
            args.duration,
            args.rows_per_shard,
            args.ray_address,
            args.ray_cpus,
            args.actors,
            args.precision,
        )
    else:
        meta, usable = extract(
            args.input,
            args.out,
            args.encoders,
            args.duration,
            args.rows_per_shard,
            device=device,
            precision=args.precision,
        )
    kind = "video-text-audio" if meta.has_video else "text-audio"
    counted = f"{usable} of {meta.rows} rows usable" if usable is not None else f"{meta.rows} rows"
    stages = meta.precision.get("stages", {})
    print(
        f"{args.out}: {counted} ({kind}), {meta.num_shards} shard(s), encoders {meta.encoder_set}, "
        f"precision {', '.join(f'{k} {v}' for k, v in stages.items())}"
    )
    return 0
