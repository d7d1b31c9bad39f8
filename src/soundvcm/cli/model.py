"""``soundvcm model list|ship|init``: shipped models and random-initialised checkpoints."""

from __future__ import annotations

import argparse
from pathlib import Path

from soundvcm.cli.common import NETWORK_PRESET_NAMES, add_out_argument, seed


def register(commands) -> None:
    model = commands.add_parser(
        "model", help="list shipped models, ship one, package one for a hub, or create network checkpoints"
    )
    models = model.add_subparsers(dest="model", required=True, metavar="ACTION")
    ml = models.add_parser("list", help="the models that ship with this install, checked by md5")
    ml.set_defaults(func=_model_list)
    sh = models.add_parser(
        "ship",
        help="copy a checkpoint into the package as a shipped model (fp16 weights, md5 manifest)",
        description="For maintainers: writes src/soundvcm/models/NAME.{safetensors,json} and records their md5s.",
    )
    sh.add_argument("checkpoint", type=Path, help="a soundvcm checkpoint (e.g. RUN/ema_sigma0p05)")
    sh.add_argument("--name", required=True, help="shipped name (default, default-fm, ...)")
    sh.add_argument("--description", default="", help="one line for `soundvcm model list`")
    sh.set_defaults(func=_model_ship)
    init = models.add_parser(
        "init",
        help="write a random-initialised network checkpoint (for tests and smoke runs)",
        description="Write NAME.safetensors + NAME.json for a freshly initialised network preset.",
    )
    init.add_argument("--preset", required=True, help=f"network preset: {', '.join(NETWORK_PRESET_NAMES)}")
    init.add_argument("--out", required=True, type=Path, help="output path (NAME, NAME.json or NAME.safetensors)")
    init.add_argument("--seed", type=seed, default=0, help="initialisation seed (default 0)")
    init.add_argument(
        "--encoders",
        default=None,
        help="encoder set whose feature sizes the network takes: lite, "
        "mmaudio_16k, mmaudio_44k (default: the preset's own; debug presets keep their sizes)",
    )
    init.add_argument(
        "--objective",
        default="vcm",
        help="objective recorded in the checkpoint, which picks the "
        "default sampler: vcm, vcm_sec43, meanflow (consistency) or fm (euler + CFG); default vcm",
    )
    init.set_defaults(func=_model_init)
    pk = models.add_parser(
        "package",
        help="write a checkpoint as a folder to push to a model hub as-is",
        description="OUT/model.safetensors + OUT/model.json (with the run's spec) + OUT/README.md (a model card). "
        "Push it with `huggingface-cli upload ORG/NAME OUT`; then `--model ORG/NAME[@REV]` loads it from the hub "
        "cache (HF_HUB_OFFLINE=1 works once cached).",
    )
    pk.add_argument("checkpoint", help="a checkpoint path, shipped name or hub id")
    add_out_argument(pk, "output folder (its name titles the model card)")
    pk.set_defaults(func=_model_package)


def _model_list(args: argparse.Namespace) -> int:
    from soundvcm import models

    entries = models.manifest()
    if not entries:
        print(f"no models ship with this install; {models.RESTORE}")
        return 0
    for name, entry in entries.items():
        try:
            models.resolve_shipped(name)
            state = "ok"
        except (OSError, ValueError) as exc:
            state = f"DAMAGED: {exc}"
        print(f"{name:12s} {entry['parameters'] / 1e6:5.1f}M  {entry['description']}  [{state}]")
    return 0


def _model_ship(args: argparse.Namespace) -> int:
    from soundvcm import models

    if not args.name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"--name {args.name!r}: use letters, digits, '-' and '_'")
    path = models.ship(args.checkpoint, args.name, args.description)
    size = sum(f.stat().st_size for f in path.parent.glob(f"{args.name}.*")) / 1e6
    print(f"shipped {args.name}: {path}.safetensors + .json ({size:.1f} MB)")
    return 0


def _model_init(args: argparse.Namespace) -> int:
    import torch

    from soundvcm.network.checkpoint import save_network
    from soundvcm.network.mmdit import MMDiT
    from soundvcm.objectives import OBJECTIVE_PRESETS
    from soundvcm.spec import ModelSpec, preset_for_encoders

    if args.objective not in OBJECTIVE_PRESETS:
        raise ValueError(f"unknown objective '{args.objective}'; choose one of {sorted(OBJECTIVE_PRESETS)}")
    config, encoder_set = preset_for_encoders(args.preset, args.encoders)
    torch.manual_seed(args.seed)
    net = MMDiT(config)
    weights, cfg = save_network(
        args.out,
        net,
        preset=args.preset,
        encoder_set=encoder_set,
        objective=args.objective,
        provenance={"kind": "random-init", "seed": args.seed},
        spec=ModelSpec.create(args.preset, encoder_set, args.objective, network_config=config).to_dict(),
    )
    n = sum(p.numel() for p in net.parameters())
    print(f"wrote {weights} and {cfg} ({args.preset}, {n:,} parameters, random init)")
    return 0


def _model_package(args: argparse.Namespace) -> int:
    from soundvcm.hub import package

    out = package(args.checkpoint, args.out)
    print(f"wrote {out}/model.safetensors, model.json and README.md")
    return 0
