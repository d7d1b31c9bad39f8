"""``soundvcm train``: FM, VCM or MeanFlow on feature caches (presets, dotted overrides, --resume, --init)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from soundvcm.cli.common import add_device_option
from soundvcm.precision import PRECISIONS

# the training presets by name (soundvcm.training.config.TRAIN_PRESETS, which imports torch; a test
# keeps the two equal): paper-scale, the lite_small family (the shipped lite models) and lite2_small's
TRAIN_PRESET_NAMES = (
    "paper",
    "fm_baseline",
    "meanflow_baseline",
    "lite_cpu",
    "lite_small",
    "lite_small_fm",
    "lite_small_split_p",
    "lite_small_meanflow",
    "lite2_small",
    "lite2_small_fm",
    "lite2_small_meanflow",
    "lite3_small",
    "lite3_small_fm",
    "lite3_small_meanflow",
    "lite3_wide_patch2",
    "lite3_wide_patch2_fm",
    "tiny_cpu",
)


DATA_HELP = (
    "cache folders, optionally PATH:WEIGHT, or PATH:WEIGHT:keep=text so that its rows never lose their caption "
    "alone to condition dropout (with --resume: default the run's own, from RUN/config.json)"
)


def register(commands) -> None:
    tr = commands.add_parser(
        "train",
        help="train a network on feature caches (FM, VCM or MeanFlow; torchrun for several processes)",
        description="soundvcm train --preset NAME --data CACHE[:WEIGHT]... --out DIR [--steps N] [--resume] "
        "[key=value ...]. "
        f"Presets: {', '.join(TRAIN_PRESET_NAMES)}. Caches may be soundvcm caches or "
        "MMAudio's TensorDict folders; each gets equal exposure unless weighted. Several processes: "
        "torchrun --nproc-per-node G [--nnodes N --node-rank I --rdzv-backend c10d --rdzv-endpoint HOST:PORT] "
        "-m soundvcm.cli train ...",
    )
    tr.add_argument("--preset", default=None, help="training preset (default paper; with --resume: the run's own)")
    tr.add_argument("--data", nargs="+", default=None, help=DATA_HELP)
    tr.add_argument("--out", required=True, type=Path, help="run folder (checkpoints, EMA snapshots, tb, samples)")
    tr.add_argument("--train-steps", dest="steps", type=int, default=None, help="total steps (overrides the preset)")
    tr.add_argument("--steps", dest="steps", type=int, help=argparse.SUPPRESS)  # the name before issue 36
    tr.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its latest checkpoint and saved config"
    )
    tr.add_argument(
        "--allow-changes", action="store_true", help="with --resume: apply the given --steps/key=value changes"
    )
    tr.add_argument(
        "--allow-mixed-encoders",
        action="store_true",
        help="train on caches whose encoder weight files differ (refused by default)",
    )
    add_device_option(tr, what="where to train (auto under torchrun: cuda:LOCAL_RANK)")
    tr.add_argument(
        "--init",
        default=None,
        metavar="CKPT",
        help="start a new run from these weights: a soundvcm checkpoint, a shipped model's name (default) or a "
        "registered MMAudio network (mmaudio_small_16k, ...: its file from `soundvcm weights download`); its network "
        "is used and any objective continues it, e.g. an MMAudio flow-matching model trained as a VCM. With "
        "trainable=REGEX,... only matching parameters train; lora_rank=R trains low-rank adapters instead "
        "(merged on export)",
    )
    tr.add_argument(
        "--parallel",
        choices=("auto", "ddp", "fsdp", "allreduce"),
        default="auto",
        help="how ranks under torchrun share a step: ddp (DistributedDataParallel, bucketed all-reduce overlapping "
        "the backward; the default, every objective), fsdp (FSDP2: parameters, gradients, optimizer and EMA "
        "sharded over the ranks, for the 44k and large presets), allreduce (one flat all-reduce after the "
        "backward, no overlap: a fallback). One process: ignored. Not fixed on resume",
    )
    tr.add_argument("--fsdp", action="store_const", const="fsdp", dest="parallel", help="same as --parallel fsdp")
    tr.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="the network's autocast while training: auto (bf16 on a GPU, and on a CPU only where it computes bf16 "
        "natively and a measured check finds it faster; fp32 elsewhere), fp32 or bf16; default: the preset's "
        "(auto), with --resume the run's own. The choice is printed and saved in RUN/config.json and checkpoints",
    )
    tr.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. lr=2e-4 batch_size=64")
    tr.set_defaults(func=_train)


def _config(args: argparse.Namespace, saved):
    """The run's config: a preset with overrides, or (``--resume``) the saved one, changed only when asked."""
    import dataclasses

    from soundvcm.training.checkpoint import read_checkpoint_doc
    from soundvcm.training.config import config_from_dict, resume_config, train_config

    extra = {"steps": args.steps} if args.steps is not None else {}
    if args.precision is not None:
        extra["precision"] = args.precision
    if saved is not None:
        saved_config = config_from_dict(read_checkpoint_doc(saved)["config"])
        return resume_config(saved_config, args.preset, args.overrides, args.allow_changes, **extra)
    if args.allow_changes and not args.resume:
        raise ValueError("--allow-changes only goes with --resume")
    config = train_config(args.preset or "paper", args.overrides, **extra)
    if args.init is not None:  # the network preset comes from the checkpoint
        from soundvcm.network.config import PRESETS
        from soundvcm.training.finetune import init_preset

        preset = init_preset(args.init)
        if preset not in PRESETS:
            raise ValueError(f"--init {args.init}: its network preset {preset!r} is not one of this version's")
        config = dataclasses.replace(config, network=preset)
    return config


def _recorded(out: Path) -> dict:
    """RUN/config.json as the run's writer saved it (empty when there is none)."""
    path = out / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _data(args: argparse.Namespace, recorded: dict) -> list[str]:
    """--data, or with --resume the caches the run recorded in RUN/config.json (``recorded``)."""
    if args.data:
        return list(args.data)
    if not args.resume:
        raise ValueError("--data is required: the cache folders to train on (PATH[:WEIGHT] ...)")
    if not recorded.get("data"):
        raise ValueError(f"--resume without --data: {args.out / 'config.json'} records no caches; pass --data")
    return list(recorded["data"])


def _save_resolved(trainer, config, init, data: list[str]) -> None:
    """Print the resolved config and save it as RUN/config.json (the writer only)."""
    from soundvcm.atomic import atomic_write
    from soundvcm.configs import to_dict

    resolved = {
        "train": to_dict(config),
        "objective": to_dict(trainer.objective.config),
        "init": init,
        "data": data,
        "precision": trainer.made_with(),
    }
    text = json.dumps(resolved, default=str)
    print(f"config: {text}", file=sys.stderr)
    atomic_write(Path(trainer.out) / "config.json", lambda tmp: tmp.write_text(json.dumps(json.loads(text), indent=1)))


def _train(args: argparse.Namespace) -> int:
    from soundvcm.training.checkpoint import latest_checkpoint
    from soundvcm.training.trainer import Trainer, TrainingAborted, TrainingInterrupted

    saved = latest_checkpoint(args.out / "checkpoints") if args.resume else None
    config = _config(args, saved)
    init = args.init if saved is None else None
    recorded = _recorded(args.out) if args.resume else {}
    data = _data(args, recorded)
    trainer = Trainer(
        config,
        data,
        args.out,
        device=args.device,
        resume=args.resume,
        allow_mixed_encoders=args.allow_mixed_encoders,
        init=init,
        parallel=args.parallel,
    )
    if trainer.engine.is_writer:
        _save_resolved(trainer, config, recorded.get("init", init) if saved is not None else init, data)
    try:
        trainer.fit()
    except TrainingAborted as exc:
        raise ValueError(str(exc)) from exc
    except TrainingInterrupted as exc:
        if trainer.engine.is_writer:
            print(f"interrupted at step {exc.step}; saved {exc.checkpoint} (continue with --resume)", file=sys.stderr)
        _close(trainer)
        return 130
    _close(trainer)
    return 0


def _close(trainer) -> None:
    """Leave the process group together (ranks that exit while others still talk abort gloo)."""
    import torch.distributed as dist

    if trainer.world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
