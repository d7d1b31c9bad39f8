"""``soundvcm ema``: post-hoc EMA weights synthesised from a run's snapshots."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from soundvcm.cli.common import positive_float, positive_int


def register(commands) -> None:
    ema = commands.add_parser("ema", help="synthesise post-hoc EMA weights from a run's snapshots")
    ema.add_argument("run", type=Path, help="run folder given to `soundvcm train --out`")
    ema.add_argument("--sigma-rel", type=positive_float, default=0.05, help="EMA width (default 0.05)")
    ema.add_argument(
        "--step",
        type=positive_int,
        default=None,
        help="the EMA as it was at this training step, from the snapshots up to it (default: the run's last step; "
        "a step past the last snapshot gives the last snapshot's)",
    )
    ema.add_argument("--out", type=Path, default=None, help="checkpoint path (default RUN/ema_sigma0p05 etc.)")
    ema.set_defaults(func=_ema)


def _ema(args: argparse.Namespace) -> int:
    from soundvcm.network.checkpoint import config_from_dict
    from soundvcm.spec import ModelSpec
    from soundvcm.training.checkpoint import latest_checkpoint, read_checkpoint_doc
    from soundvcm.training.export import export_ema_checkpoint

    ckpt = latest_checkpoint(args.run / "checkpoints")
    if ckpt is None:
        raise FileNotFoundError(f"{args.run}: no training checkpoint")
    doc = read_checkpoint_doc(ckpt)
    if doc["step"] == 0:
        raise ValueError(f"{ckpt}: the run has not trained a step yet; there is no EMA to export")
    if "spec" in doc:
        spec = ModelSpec.from_dict(doc["spec"])
    else:  # a run saved before specs existed
        from soundvcm.training.config import config_from_dict as train_config_from_dict

        train = train_config_from_dict(doc["config"])
        spec = ModelSpec.create(
            train.network,
            doc["encoder_set"],
            train.objective,
            train.objective_config,
            config_from_dict(doc["network_config"]),
        )
    path, info = export_ema_checkpoint(
        args.run,
        args.sigma_rel,
        min(args.step, doc["step"]) if args.step else doc["step"],
        config_from_dict(doc["network_config"]),
        spec,
        args.out,
        precision=doc.get("precision"),
    )
    print(f"EMA sigma_rel {args.sigma_rel} at step {info['step']} from {info['snapshots']} snapshots -> {path}")
    print(json.dumps(info))
    return 0
