"""``soundvcm vocoder distill|export``: the lighter vocoder distilled from HiFi-GAN V1 (issue 22)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from soundvcm.cli.common import add_out_argument, add_precision_option, positive_int

if TYPE_CHECKING:
    from soundvcm.training.vocoder import DistillConfig


def register(commands) -> None:
    voc = commands.add_parser("vocoder", help="distil a lighter vocoder from HiFi-GAN V1 universal, or export it")
    sub = voc.add_subparsers(dest="vocoder", required=True, metavar="ACTION")
    dist = sub.add_parser(
        "distill",
        help="build the teacher bank from the open data (if missing) and train the student (resumable)",
        description="Segments of the open data's training audio are vocoded by HiFi-GAN V1 universal (the teacher) "
        "into OUT/bank; the student learns to reproduce the teacher's waveform from the same mel: HiFi-GAN's "
        "own layout narrowed to --channels (V2's 128: ~16x fewer multiply-adds), or with --student istft a "
        "frame-rate network with an inverse-STFT head (~40x fewer). Rerun the same command to resume the "
        "bank or the training.",
    )
    dist.add_argument("--data", required=True, type=Path, help="folder written by `soundvcm data open`")
    dist.add_argument("--out", required=True, type=Path, help="run folder (bank, checkpoint)")
    dist.add_argument("--train-steps", dest="steps", type=positive_int, default=None, help="total steps (default 6000)")
    dist.add_argument("--steps", dest="steps", type=positive_int, help=argparse.SUPPRESS)  # the name before issue 36
    dist.add_argument("--segments", type=positive_int, default=None, help="bank segments (default 3000)")
    _student_options(dist)
    dist.add_argument("--lr", type=float, default=None, help="peak learning rate (default 2e-4)")
    dist.add_argument("--batch", type=positive_int, default=None, help="bank segments per step (default 8)")
    dist.add_argument(
        "--spectrum-weight",
        type=float,
        default=None,
        help="istft students: weight of the head's spectrum against the teacher's (compressed complex MSE, "
        "which tells the phase directly; default 0: the waveform losses alone)",
    )
    dist.add_argument(
        "--adversarial",
        type=float,
        default=None,
        help="trunk students: weight of a least-squares adversarial term (period and resolution discriminators, "
        "feature matching at 2x; HiFi-GAN's 1); default 0: distillation losses alone",
    )
    dist.add_argument("--decay-start", type=int, default=None, help="step where the cosine decay begins (default 5000)")
    dist.add_argument(
        "--init", type=Path, default=None, help="start the student from a `soundvcm vocoder export` stem (its shape)"
    )
    dist.add_argument("--bank", type=Path, default=None, help="teacher bank folder (default OUT/bank; shareable)")
    dist.add_argument(
        "--min-peak",
        type=float,
        default=None,
        help="bank segments get a peak drawn log-uniformly in [MIN_PEAK, 0.95] (default: all at 0.95); "
        "a bank is built with one setting, so give a new --bank",
    )
    add_precision_option(dist, "the teacher and the student's training (auto: bf16 where the CPU has it)")
    dist.set_defaults(func=_distill)
    exp = sub.add_parser("export", help="write a run's student as fp16 weights + JSON")
    exp.add_argument("run", type=Path, help="run folder of `soundvcm vocoder distill`")
    add_out_argument(exp, "output stem (OUT.safetensors + OUT.json)")
    exp.set_defaults(func=_export)


def _student_options(dist: argparse.ArgumentParser) -> None:
    """Which student, its shape and where its weights start."""
    dist.add_argument(
        "--student",
        choices=("hifigan", "istft", "trunk"),
        default="hifigan",
        help="hifigan: HiFi-GAN's layout at --channels; istft: ConvNeXt blocks at the frame rate and an "
        "inverse-STFT head (--dim, --layers; soundvcm.encoders.istft_vocoder); trunk: the teacher's own "
        "first two stages, frozen, and an inverse-STFT head with --layers blocks (soundvcm.encoders.trunk_vocoder)",
    )
    dist.add_argument(
        "--channels", type=positive_int, default=128, help="hifigan student width after the input conv (V2 128, V1 512)"
    )
    dist.add_argument("--dim", type=positive_int, default=384, help="istft student width (hidden: 3x)")
    layers_help = "istft: ConvNeXt blocks (8); trunk: residual convolutions (3)"
    dist.add_argument("--layers", type=positive_int, default=None, help=layers_help)
    dist.add_argument(
        "--stage2-blocks",
        type=int,
        choices=(0, 1, 2, 3),
        default=3,
        help="trunk student: how many of stage 2's residual blocks (kernels 3, 7, 11) the trunk keeps; the head "
        "learns the rest (3: 2/3 of V1's time left in the trunk, 2: ~1/2, 0: ~1/4)",
    )
    dist.add_argument(
        "--hop",
        type=positive_int,
        default=256,
        help="istft student: samples per spectrum (256: one per mel frame; 64: four, after an upsampling and "
        "two ConvNeXt blocks of 128 channels; the window is 4 hops)",
    )
    dist.add_argument(
        "--prune",
        action="store_true",
        help="start the student as the teacher narrowed to --channels (its least used channels removed, the "
        "rest refitted by least squares on bank segments) instead of random weights",
    )


def _distill(args: argparse.Namespace) -> int:
    import json

    import torch

    from soundvcm.encoders.hifigan import HiFiGAN
    from soundvcm.encoders.istft_vocoder import ISTFTShape
    from soundvcm.encoders.students import distilled_vocoder
    from soundvcm.encoders.trunk_vocoder import TrunkShape
    from soundvcm.precision import resolve_precision
    from soundvcm.training.interrupt import TrainingInterrupted
    from soundvcm.training.vocoder import Shape, StudentShape, VocoderDistiller, export_shape, shape_from_dict
    from soundvcm.training.vocoder_bank import bank_chunks, build_bank, load_bank
    from soundvcm.training.vocoder_prune import REFIT_SEGMENTS, prune_teacher, refit

    cfg = _config(args)
    if args.init and args.prune:
        raise ValueError("--init and --prune both choose the starting weights; give one")
    bank = args.bank or args.out / "bank"
    missing = not all(c.is_file() for c in bank_chunks(bank, cfg))
    if args.student == "trunk" and args.precision != "fp32" and missing:  # the teacher's bank is built in it
        print("note: a trunk student learns from the teacher's fp32 waveforms best: give --precision fp32")
    if args.prune and args.student != "hifigan":
        raise ValueError("--prune narrows the teacher itself: it needs --student hifigan")
    shape: Shape = StudentShape(channels=args.channels)
    if args.student == "istft":  # checked here, before the bank's minutes
        shape = ISTFTShape(dim=args.dim, layers=args.layers or 8, hidden=3 * args.dim, n_fft=4 * args.hop, hop=args.hop)
    elif args.student == "trunk":
        shape = TrunkShape(layers=args.layers or 3, stage2_blocks=args.stage2_blocks)
    plan = resolve_precision(args.precision, "cpu", ("vocoder", "train"))
    print(plan.describe())
    teacher = HiFiGAN.pretrained()
    build_bank(args.data, bank, cfg, teacher, plan.dtype("vocoder"))
    data = load_bank(bank, cfg)
    init: torch.nn.Module | None = None
    fresh = not (args.out / "checkpoint.json").is_file()  # a rerun resumes its checkpoint instead
    if not fresh:  # a rerun continues with the shape its checkpoint recorded
        shape = shape_from_dict(json.loads((args.out / "checkpoint.json").read_text())["shape"])
    if args.prune and fresh:
        print(f"pruning the teacher to {args.channels} channels and refitting on {REFIT_SEGMENTS} bank segments")
        init = refit(prune_teacher(teacher, args.channels), teacher, data[0][-REFIT_SEGMENTS:])
    elif args.init:
        shape = export_shape(args.init)  # a rerun needs the shape to restore its checkpoint, not the weights
        init = distilled_vocoder(args.init) if fresh else None
    distiller: VocoderDistiller
    if cfg.adversarial > 0:
        from soundvcm.training.vocoder_gan import AdversarialDistiller

        distiller = AdversarialDistiller(data, args.out, cfg, shape, plan.dtype("train"), init)
    else:
        distiller = VocoderDistiller(data, args.out, cfg, shape, plan.dtype("train"), init)
    try:
        history = distiller.fit()
    except TrainingInterrupted as exc:
        print(f"interrupted at step {exc.step}; saved {args.out} (rerun the same command to continue)")
        return 130
    if history:
        print(f"step {distiller.step}: held-out log-mel L1 to the teacher {history[-1]['val_mel_l1']:.4f}")
    return 0


def _config(args: argparse.Namespace) -> DistillConfig:
    """The DistillConfig the options ask for (the defaults where they are left out)."""
    from dataclasses import replace

    from soundvcm.training.vocoder import PEAK, DistillConfig

    cfg = DistillConfig()
    cfg = replace(
        cfg,
        steps=args.steps or cfg.steps,
        segments=args.segments or cfg.segments,
        lr=args.lr or cfg.lr,
        batch=args.batch or cfg.batch,
        spectrum_weight=cfg.spectrum_weight if args.spectrum_weight is None else args.spectrum_weight,
        decay_start=cfg.decay_start if args.decay_start is None else args.decay_start,
        min_peak=cfg.min_peak if args.min_peak is None else args.min_peak,
        adversarial=args.adversarial or 0.0,
    )
    if cfg.adversarial and args.student != "trunk":
        raise ValueError(
            "--adversarial is for --student trunk (its features are computed once, so the discriminators fit)"
        )
    if not 0 < cfg.min_peak <= PEAK:
        raise ValueError(f"--min-peak must be in (0, {PEAK}], got {cfg.min_peak}")
    return cfg


def _export(args: argparse.Namespace) -> int:
    from soundvcm.training.vocoder import export_student

    if not (args.run / "checkpoint.json").is_file():
        raise FileNotFoundError(f"{args.run}: no distillation checkpoint (run `soundvcm vocoder distill` first)")
    out = export_student(args.run, args.out)
    print(f"{out}.safetensors, {out}.json")
    return 0
