"""``soundvcm convert mmaudio``: an MMAudio network .pth -> a soundvcm checkpoint with its spec."""

from __future__ import annotations

import argparse
from pathlib import Path

from soundvcm.cli.common import add_out_argument


def register(commands) -> None:
    convert = commands.add_parser("convert", help="convert released checkpoints into soundvcm's format")
    converts = convert.add_subparsers(dest="source", required=True, metavar="SOURCE")
    mm = converts.add_parser(
        "mmaudio",
        help="an MMAudio network .pth (weights_only load, strict) -> soundvcm checkpoint",
        description=(
            "Load an MMAudio network checkpoint (mmaudio_small_16k.pth, ...) strictly with weights_only=True "
            "and save it as a soundvcm checkpoint with a zero-initialised offset embedder, so that "
            "v(x, t) = -net_mmaudio(x, 1 - t) at s = t."
        ),
    )
    mm.add_argument("input", type=Path, help="MMAudio .pth file")
    add_out_argument(mm, "output path (NAME, NAME.json or NAME.safetensors)")
    mm.add_argument("--variant", default=None, help="MMAudio variant (default: detected from the shapes)")
    mm.set_defaults(func=_convert_mmaudio)


def _convert_mmaudio(args: argparse.Namespace) -> int:
    from soundvcm.network.checkpoint import (
        detect_mmaudio_variant,
        mmaudio_to_soundvcm,
        read_mmaudio_state,
        save_network,
    )
    from soundvcm.spec import PRESET_ENCODERS, ModelSpec

    state = read_mmaudio_state(args.input)
    variant = args.variant or detect_mmaudio_variant(state)
    net = mmaudio_to_soundvcm(state, variant)
    spec = ModelSpec.create(variant, PRESET_ENCODERS[variant], "fm", network_config=net.config)  # inferred once, here
    weights, cfg = save_network(
        args.out,
        net,
        preset=variant,
        encoder_set=spec.encoder_set,
        objective="fm",
        provenance={"kind": "converted", "source": "MMAudio", "variant": variant, "file": args.input.name},
        spec=spec.to_dict(),
    )
    print(f"converted MMAudio {variant} -> {weights} + {cfg}")
    return 0
