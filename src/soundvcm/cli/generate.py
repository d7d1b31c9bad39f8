"""``soundvcm generate``: soundtracks for videos (or audio from text or an image) through
:class:`soundvcm.pipeline.Pipeline`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from soundvcm.cli.common import (
    add_device_option,
    add_engine_options,
    add_precision_option,
    check_engine_options,
    finite_float,
    nonnegative_float,
    positive_float,
    sampling_steps,
    seed,
)


def register(commands) -> None:
    gen = commands.add_parser(
        "generate",
        help="generate a soundtrack for a video (or audio from text or an image)",
        description="Generate audio for VIDEO (a file, a folder of videos, or a TSV of 'video<TAB>prompt' rows) and "
        "write OUT/NAME.flac plus OUT/NAME.mp4 with the new soundtrack. Without VIDEO, --prompt gives text-to-audio "
        "and --image image-to-audio. Outputs appear only when complete.",
    )
    _inputs(gen.add_argument_group("inputs"))
    _sampling(
        gen.add_argument_group(
            "model and sampling",
            "Which options apply depends on the model's sampler (from its checkpoint spec). Consistency models "
            "(VCM, MeanFlow; the shipped 'default'): --steps (default 1), --negative-prompt with --negative-scale; "
            "their guidance is baked in by training, so --cfg is refused. Flow-matching models ('default-fm', "
            "MMAudio's): --steps (default 25), --cfg (default 4.5), --cfg-t-max, --negative-prompt (replaces "
            "the null condition of CFG; --negative-scale is refused). Both: --prompt-scale. --sampler switches to the "
            "other sampler's rules.",
        )
    )
    _outputs(gen.add_argument_group("outputs"), gen)
    add_engine_options(gen, "runs a batch")
    gen.set_defaults(func=_generate)


def _inputs(group) -> None:
    group.add_argument("input", nargs="?", type=Path, default=None, metavar="VIDEO", help="video file, folder or .tsv")
    group.add_argument("--prompt", default=None, help="text condition (optional with a video)")
    group.add_argument("--negative-prompt", default=None, help="what to steer away from (e.g. 'music')")
    group.add_argument("--image", type=Path, default=None, help="an image as the visual condition")
    group.add_argument(
        "--duration",
        type=positive_float,
        default=None,
        help="seconds to generate from --start (default: the whole video, window by window; without a video, "
        "one window)",
    )
    group.add_argument(
        "--start", type=nonnegative_float, default=0.0, help="where in the video to start, seconds (default 0)"
    )
    group.add_argument(
        "--window",
        type=positive_float,
        default=None,
        help="seconds per window of a longer span (default: the length the model was trained on, 4 s for the "
        "shipped models); windows overlap by --overlap and are crossfaded",
    )
    group.add_argument(
        "--overlap",
        type=finite_float,
        default=None,
        help="window overlap (default 0.5 s, a quarter of shorter windows)",
    )
    group.add_argument("--full", action="store_true", help=argparse.SUPPRESS)  # the default since issue 35


def _sampling(group) -> None:
    group.add_argument(
        "--model",
        default=None,
        help="a shipped model's name (default, default-fm: `soundvcm model list`) or a checkpoint path (NAME, "
        "NAME.json or NAME.safetensors); default: $SOUNDVCM_MODEL, else the shipped default",
    )
    group.add_argument(
        "--sampler",
        choices=("consistency", "euler"),
        default=None,
        help="default: the model's own (consistency for VCM/MeanFlow, euler + CFG for flow matching)",
    )
    group.add_argument(
        "--steps",
        type=sampling_steps,
        default=None,
        help="sampling steps, 1 to 1000 (default 1 for consistency, 25 for euler)",
    )
    group.add_argument("--seed", type=seed, default=42, help="noise seed (default 42)")
    group.add_argument("--cfg", type=finite_float, default=None, help="euler sampler only: CFG strength (default 4.5)")
    group.add_argument(
        "--cfg-t-max",
        type=finite_float,
        default=None,
        help="euler sampler only: apply CFG at steps with t <= this (t = 1 is noise; default 1: every step)",
    )
    group.add_argument(
        "--negative-scale",
        type=finite_float,
        default=None,
        help="consistency sampler only: how hard to steer away from --negative-prompt (default 1)",
    )
    group.add_argument(
        "--prompt-scale",
        type=finite_float,
        default=None,
        metavar="G",
        help="both samplers: extra guidance towards what --prompt adds to the same video, so the prompt can "
        "override the sound the picture suggests; one more network pass per step, only with a prompt "
        "(0 to 20; default 0: off)",
    )
    add_device_option(group)
    add_precision_option(group, "the encoders, the network and the vocoder (--profile shows the choice)")
    group.add_argument(
        "--vocoder",
        default="auto",
        metavar="auto|hifigan|fast|PATH",
        help="lite sets: hifigan (HiFi-GAN V1 universal, the reference), a `soundvcm vocoder export` path, or fast "
        "(a distilled vocoder, where one ships with the package); auto (default): fast where it ships, else hifigan",
    )


def _outputs(group, gen) -> None:
    group.add_argument("--out", type=Path, default=Path("out/generate"), help="output folder (default out/generate)")
    existing = gen.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    existing.add_argument(
        "--skip-existing", action="store_true", help="leave out jobs whose outputs exist (resume a batch)"
    )
    group.add_argument(
        "--raw-level",
        action="store_true",
        help="keep the model's own level (only limited to -1 dBTP); default: every output is scaled to a -1 dBTP "
        "true peak (raised by at most 30 dB), whatever the model and the step count",
    )
    group.add_argument("--profile", action="store_true", help="print per-stage times and each stage's precision")
    group.add_argument(
        "--plot", action="store_true", help="also write OUT/NAME.png: the spectrogram, with a video's frames above it"
    )


def _model_name(args: argparse.Namespace) -> str:
    """--model, else $SOUNDVCM_MODEL, else the shipped default."""
    import os

    from soundvcm import models

    model = args.model or os.environ.get("SOUNDVCM_MODEL")
    if model is None:
        if models.DEFAULT not in models.manifest():
            raise ValueError(
                "no model given and none ships with this install: pass --model PATH or set SOUNDVCM_MODEL; "
                + models.RESTORE
            )
        model = models.DEFAULT
    return model


# what to say when a sampling option does not apply to the sampler the model will use (never ignored)
FOREIGN = {
    "cfg_scale": "--cfg/--cfg-t-max set the euler sampler's guidance; this model samples with the consistency "
    "sampler, whose guidance is baked in by training (use --sampler euler to apply CFG, or leave --cfg out)",
    "negative_scale": "--negative-scale applies to the consistency sampler; with the euler sampler the negative "
    "prompt replaces CFG's null condition and --cfg sets the strength",
}
FOREIGN["guidance_t_max"] = FOREIGN["cfg_scale"]


def _sampler(args: argparse.Namespace, spec):
    """The one sampler options object of this run: the model's own (its spec), or --sampler's defaults,
    with --steps, --cfg, --cfg-t-max, --negative-scale and --prompt-scale applied."""
    from soundvcm.sampling import ForeignSetting

    try:
        settings = {"steps": args.steps, "cfg_scale": args.cfg, "guidance_t_max": args.cfg_t_max,
                    "prompt_scale": args.prompt_scale}  # fmt: skip
        return spec.sampler_for(args.sampler, negative_scale=args.negative_scale, **settings)
    except ForeignSetting as exc:
        raise ValueError(FOREIGN.get(exc.setting, str(exc))) from None


def _check_args(args: argparse.Namespace) -> None:
    """What can be refused from the command line alone, before any file is read."""
    check_engine_options(args)
    if args.engine == "ray":
        from soundvcm.scale.ray_engine import require_ray

        require_ray()
        if args.profile:
            raise ValueError(
                "--engine ray generates fixed-length clips (--duration, default one window): leave out --profile"
            )
    if args.overlap is not None and args.overlap < 0:
        raise ValueError("--overlap must be >= 0")
    if args.image is not None and args.input is not None:
        raise ValueError("--image replaces the video as the visual condition: give either VIDEO or --image, not both")


def _request(args: argparse.Namespace, sampler, duration: float | None):
    from soundvcm.generate import GenerateRequest

    return GenerateRequest(
        duration=duration, start=args.start, window=args.window, overlap=args.overlap, sampler=sampler,
        seed=args.seed, negative_prompt=args.negative_prompt, plot=args.plot, normalize=not args.raw_level,
    )  # fmt: skip


def _report(errors: list[str]) -> None:
    for line in errors:
        print(f"soundvcm: error: {line}", file=sys.stderr)


def _generate(args: argparse.Namespace) -> int:
    from soundvcm.generate import claim_outputs, jobs_from_input

    model = _model_name(args)
    _check_args(args)  # everything that can be checked is checked before the model and encoders load
    jobs = jobs_from_input(args.input, args.prompt, args.image)
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"{args.out}: the output folder is a file; choose another --out")
    with claim_outputs(jobs, args.out):  # no other run writes these names until this one is done
        return _generate_claimed(args, model, jobs)


def _generate_claimed(args: argparse.Namespace, model: str, jobs: list) -> int:
    from soundvcm.encoders import encoder_spec
    from soundvcm.generate import check_inputs, plan_jobs, run_generate
    from soundvcm.pipeline import Pipeline

    jobs = plan_jobs(jobs, args.out, args.overwrite, args.skip_existing)  # after the claim: no race
    if not jobs:
        print(f"nothing to do: every output exists in {args.out} (--skip-existing)")
        return 0
    spec, _ = Pipeline.peek(model)
    window = args.window or spec.duration or 8.0  # the clip length the model was trained on
    shortest = encoder_spec(spec.encoder_set).sequence.min_duration
    for option, value in (("--duration", args.duration), ("--window", window)):
        if value is not None and value < shortest:
            raise ValueError(f"{option} {value:g} is shorter than the shortest clip {model} takes: {shortest:.2f} s")
    if args.overlap is not None and args.overlap >= window / 2:
        raise ValueError(f"--overlap must be below half the window ({window:g} s), got {args.overlap:g}")
    sampler = _sampler(args, spec)
    jobs, errors = check_inputs(jobs, shortest, args.start)
    if errors and not jobs:
        if len(errors) == 1:
            raise ValueError(errors[0])
        _report(errors)
        print(f"soundvcm: {len(errors)} of {len(errors)} job(s) failed", file=sys.stderr)
        return 2
    _report(errors)
    if args.engine == "ray":
        from soundvcm.scale.ray_engine import generate_ray

        request = _request(args, sampler, args.duration or window)  # fixed-length clips
        return generate_ray(
            model, jobs, args.out, request, args.ray_address, args.ray_cpus, args.actors, len(errors), args.precision
        )
    from soundvcm.console import StageStatus

    with StageStatus("soundvcm").stage(f"loading {model} and its encoders"):
        pipe = Pipeline.load(model, device=args.device, precision=args.precision, vocoder=args.vocoder)
    return run_generate(pipe, jobs, args.out, _request(args, sampler, args.duration), args.profile, failed=len(errors))
