"""``soundvcm generate``: jobs from the command line, a folder or a TSV, written atomically.

Each job writes ``OUT/NAME.flac`` and, for a video, ``OUT/NAME.mp4`` (the video with the new
soundtrack). Files appear only when complete (temporary file, then rename); if muxing fails the
job's flac is removed as well. In batch mode a failing job is reported on one line and the
rest go on; the exit status is 1 if any job failed.

Before any model is loaded the whole batch is checked (:func:`plan_jobs`): output names are made
unique (``clip.avi`` and ``clip.mp4`` become ``clip`` and ``clip_2``); no output may be an input
of the batch; existing outputs are refused unless ``--overwrite`` (replace them) or
``--skip-existing`` (leave those jobs out, to resume a big batch) is given; every input must
exist, decode as media with a video stream, and be long enough (:func:`check_inputs`).

Two runs aimed at the same names: before any work, each job's name is *claimed* in the output
folder (:func:`claim_outputs`: an exclusive lock on ``OUT/.NAME.claim``, which names its host and
process), so a second run is refused in one line, ``--overwrite`` or not, until the first is done;
a killed run's claims lapse with its process. Taking the claims also proves the folder writable
before the model loads.

TSV batches: one job per row, tab-separated ``video<TAB>prompt`` (either may be empty; a header
row starting with ``video`` is skipped; relative paths are relative to the TSV).
"""

from __future__ import annotations

import errno
import math
import os
import re
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from soundvcm.atomic import remove_stale
from soundvcm.console import StageStatus
from soundvcm.media.audio import normalize_peak, write_audio
from soundvcm.media.errors import MediaError, check_input_path
from soundvcm.media.mux import mux_audio
from soundvcm.media.video import probe
from soundvcm.pipeline import STAGES, GenerationResult, Pipeline, StageTimer
from soundvcm.precision import STAGES as PRECISION_STAGES
from soundvcm.precision import PrecisionPlan
from soundvcm.sampling import SamplerOptions

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ts"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


@dataclass
class Job:
    name: str
    video: Path | None = None
    image: Path | None = None
    prompt: str | None = None
    length: float | None = None  # the video's duration in seconds, once checked

    def outputs(self, out_dir: Path) -> list[Path]:
        return [out_dir / f"{self.name}.flac"] + ([out_dir / f"{self.name}.mp4"] if self.video is not None else [])

    def inputs(self) -> list[Path]:
        return [p for p in (self.video, self.image) if p is not None]

    @property
    def source(self) -> str:
        """What the job reads, for messages: the video or image path, else the prompt."""
        first = self.video or self.image
        return str(first) if first is not None else repr(self.prompt)


def unique_name(name: str, taken: set[str]) -> str:
    """``name``, or ``name_2``, ``name_3``, ... whichever is free; the result is added to ``taken``."""
    base, k = name, 1
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name


def slug(text: str, limit: int = 48) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()
    return s[:limit] or "audio"


def jobs_from_input(source: Path | None, prompt: str | None, image: Path | None) -> list[Job]:
    """One job for a file/prompt/image, or many for a folder of videos or a TSV."""
    if source is None:
        if image is not None:
            return [Job(image.stem, image=image, prompt=prompt)]
        if prompt is None:
            raise ValueError("give a VIDEO (file, folder or .tsv), --image PATH, or --prompt TEXT")
        return [Job(slug(prompt), prompt=prompt)]
    if not source.exists():
        raise MediaError(f"{source}: no such file or directory")
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
        if not files:
            raise MediaError(f"{source}: a directory with no video files ({', '.join(sorted(VIDEO_SUFFIXES))})")
        taken: set[str] = set()
        return [Job(unique_name(p.stem, taken), video=p, prompt=prompt) for p in files]
    if source.suffix.lower() == ".tsv":
        return jobs_from_tsv(source, prompt)
    if source.suffix.lower() in IMAGE_SUFFIXES:
        return [Job(source.stem, image=source, prompt=prompt)]
    return [Job(source.stem, video=source, prompt=prompt)]


def jobs_from_tsv(path: Path, default_prompt: str | None) -> list[Job]:
    jobs: list[Job] = []
    names: set[str] = set()
    for i, line in enumerate(path.read_text().splitlines()):
        if not line.strip() or (i == 0 and line.lower().startswith("video")):
            continue
        cols = line.split("\t")
        video = cols[0].strip() or None
        prompt = (cols[1].strip() if len(cols) > 1 else "") or default_prompt
        if video is None and prompt is None:
            raise ValueError(f"{path}:{i + 1}: a row needs a video or a prompt")
        vpath = None if video is None else (path.parent / video if not Path(video).is_absolute() else Path(video))
        name = unique_name(vpath.stem if vpath is not None else slug(prompt or ""), names)
        if vpath is not None and vpath.suffix.lower() in IMAGE_SUFFIXES:
            jobs.append(Job(name, image=vpath, prompt=prompt))
        else:
            jobs.append(Job(name, video=vpath, prompt=prompt))
    if not jobs:
        raise ValueError(f"{path}: no jobs in the TSV")
    return jobs


def plan_jobs(jobs: list[Job], out_dir: Path, overwrite: bool = False, skip_existing: bool = False) -> list[Job]:
    """Check the batch's outputs before any work; returns the jobs to run (see the module docstring)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir}: the output folder is a file; choose another --out")
    inputs = {p.resolve() for job in jobs for p in job.inputs()}
    for job in jobs:
        for out in job.outputs(out_dir):
            if out.resolve() in inputs:
                raise ValueError(
                    f"{out}: the output would overwrite an input of this batch; choose another --out folder"
                )
    if overwrite:
        return list(jobs)
    todo, existing = [], []
    for job in jobs:
        present = [p for p in job.outputs(out_dir) if p.exists()]
        if skip_existing:  # finished jobs are left out; a half-finished one runs again
            if len(present) < len(job.outputs(out_dir)):
                todo.append(job)
            continue
        existing += present
        todo.append(job)
    if existing:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise ValueError(
            f"{existing[0]}{more} already exist(s); pass --overwrite to replace, or --skip-existing to keep them"
        )
    return todo


class OutputsClaimed(ValueError):
    """Another live run holds the claim on an output name (see :func:`claim_outputs`)."""


def _lock(claim: Path) -> int | None:
    """An open descriptor holding an exclusive ``flock`` on ``claim`` (created if needed), or None if
    another process holds it. The kernel drops the lock when its holder dies, even by kill -9, so a
    killed run never blocks the next one. The inode check makes a claim removed by its finishing
    holder, between our open and our lock, count as not taken."""
    import fcntl

    while True:
        fd = os.open(claim, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.stat(claim).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
            return fd
        os.close(fd)  # we locked a removed file: try the path again


def _holder(claim: Path) -> str:
    try:
        return claim.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


@contextmanager
def claim_outputs(jobs: list[Job], out_dir: Path) -> Iterator[None]:
    """Claim every job's output name in ``out_dir`` for this process, for the ``with`` block.

    A claim is an exclusive lock on ``OUT/.NAME.claim``: of two runs, exactly one gets it, and a
    killed run's claim lapses with its process. A name another live process holds raises
    :class:`OutputsClaimed` (one line: which name, which host and process) after releasing what
    was already taken. A folder that cannot be created or written fails here, before model work."""
    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"{out_dir}: the output folder cannot be created ({exc.strerror or exc})") from None
    held: list[tuple[Path, int]] = []
    try:
        for job in jobs:
            claim = out_dir / f".{job.name}.claim"
            try:
                fd = _lock(claim)
            except OSError as exc:
                if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                    raise OSError(f"{out_dir}: the output folder is not writable ({exc.strerror})") from None
                raise
            if fd is None:
                raise OutputsClaimed(
                    f"{out_dir / job.name}.*: another soundvcm run (host and pid: {_holder(claim)}) is writing "
                    "these outputs; wait for it to finish or choose another --out"
                )
            held.append((claim, fd))
        yield
    finally:
        for claim, fd in held:
            claim.unlink(missing_ok=True)  # still locked: a run that opened it meanwhile sees a removed inode
            os.close(fd)
        if created and not any(out_dir.iterdir()):  # a refused run leaves no empty folder behind
            out_dir.rmdir()


def check_inputs(jobs: list[Job], min_duration: float, start: float = 0.0) -> tuple[list[Job], list[str]]:
    """Probe every video/image of the batch (cheap: headers and one frame) before loading a model.

    Returns the usable jobs (videos get ``length`` set) and one error line per unusable one.
    """
    good, errors = [], []
    for job in jobs:
        try:
            if job.video is not None:
                info = probe(job.video)
                job.length = info.duration if math.isfinite(info.duration) else None
                if job.length is not None and job.length - start < min_duration:
                    available = max(job.length - start, 0.0)
                    need = f"at least {min_duration:.2f} s needed"
                    raise MediaError(f"{job.video}: too short: {available:.2f} s from {start:g} s, {need}")
            elif job.image is not None:
                check_input_path(job.image)
        except (ValueError, OSError) as exc:
            errors.append(str(exc))
            continue
        good.append(job)
    return good, errors


@dataclass(frozen=True)
class GenerateRequest:
    """What a run asks of each of its jobs (a job brings its own inputs: video, image, prompt). Built
    by the command line, the web demo and the Ray engine, taken by :func:`run_job`.

    ``duration`` is the span from ``start`` (None: to the video's end; without a video, one window);
    a span longer than ``window`` (None: the length the model was trained on) is generated window by
    window, overlapping by ``overlap`` seconds and crossfaded. ``sampler`` None: the model's own."""

    def overlap_for(self, window: float) -> float:
        return self.overlap if self.overlap is not None else min(0.5, window / 4)

    duration: float | None = None
    start: float = 0.0
    window: float | None = None
    overlap: float | None = None  # None: 0.5 s, or a quarter of a shorter window
    sampler: SamplerOptions | None = None
    seed: int = 42
    negative_prompt: str | None = None
    plot: bool = False
    normalize: bool = True  # the loudness policy: a -1 dBTP peak for every output (media.audio.normalize_peak)

    def span(self, job: Job, window: float) -> float:
        """Seconds this request generates for ``job`` (the video's rest, its asked duration, or a window)."""
        if self.duration is not None:
            return self.duration
        if job.video is not None and job.length is not None:
            return max(job.length - self.start, 0.0)
        return window


def run_job(
    pipe: Pipeline, job: Job, out_dir: Path, request: GenerateRequest, decoded=None
) -> tuple[GenerationResult, list[Path]]:
    """Generate ``job`` as ``request`` asks and write its outputs (flac, mp4 for a video, png with
    ``plot``); ``decoded``: the video's frames, already decoded (the Ray engine's decode stage)."""
    status = StageStatus(f"generate {job.name}")  # a status line on a terminal, nothing when piped
    timer = StageTimer(pipe.device, status)
    window = request.window or pipe.default_duration
    span = request.span(job, window)
    sampler, seed, negative = request.sampler, request.seed, request.negative_prompt
    if job.video is not None and span > window + 1e-6 and decoded is None:

        def on_window(i: int, n: int) -> None:
            status.label = f"generate {job.name} window {min(i + 1, n)}/{n}"

        result = pipe.generate_long(
            job.video, window, request.overlap_for(window), seed, on_window, timer, sampler, negative,
            start=request.start, duration=span, prompt=job.prompt,
        )  # fmt: skip
    else:
        result = pipe.generate(
            job.video, job.prompt, negative, job.image, min(span, window) if job.video else span, request.start,
            sampler, seed, timer, decoded,
        )  # fmt: skip
    if job.video is not None and job.length is not None and job.length > request.start + result.duration + 0.05:
        result.warnings.append(
            f"only {result.duration:g} s from {request.start:g} s of the {job.length:.2f} s video were used "
            "(--duration); leave it out for the whole video"
        )
    if request.normalize:  # one loudness for every model and step count
        result.wave, _ = normalize_peak(result.wave)
    written = [write_audio(out_dir / f"{job.name}.flac", result.wave, result.sample_rate)]
    if job.video is not None:
        try:
            # a video with corrupt packets is re-encoded: a stream copy would carry them into the output
            reencode = True if result.damaged else None
            if result.damaged:
                result.warnings.append("the video had corrupt packets: the mp4's picture was re-encoded without them")
            with timer("mux"):
                out = out_dir / f"{job.name}.mp4"
                written.append(mux_audio(job.video, result.wave, result.sample_rate, out, request.start, reencode))
        except BaseException:
            for p in written:
                p.unlink(missing_ok=True)
            raise
        result.timings["mux"] = timer.times.get("mux", 0.0)
    if request.plot:
        from soundvcm.media.figure import soundtrack_figure

        written.append(
            soundtrack_figure(
                out_dir / f"{job.name}.png", result.wave, result.sample_rate, job.video, request.start, title=job.name
            )
        )
    return result, written


def profile_table(timings: dict[str, float], precision: PrecisionPlan | None = None) -> str:
    """Per-stage seconds and shares, with the precision each stage ran in (``-``: not a numeric stage)."""
    total = sum(timings.values())
    lines = ["| stage | seconds | share | precision |", "|---|---:|---:|---|"]
    for stage in STAGES:
        if stage in timings:
            kind = precision.name(stage) if precision is not None and stage in PRECISION_STAGES else "-"
            lines.append(f"| {stage} | {timings[stage]:.3f} | {timings[stage] / total:.1%} | {kind} |")
    lines.append(f"| total | {total:.3f} | 100% | |")
    return "\n".join(lines)


def run_generate(
    pipe: Pipeline, jobs: list[Job], out_dir: Path, request: GenerateRequest, profile: bool, failed: int = 0
) -> int:
    """Run the jobs with a progress bar; ``failed`` counts jobs already refused by the checks."""
    remove_stale(out_dir)  # what a killed run was writing
    total = len(jobs) + failed
    for note in pipe.precision.notes:
        tqdm.write(f"soundvcm: warning: {note}", file=sys.stderr)
    if profile:
        tqdm.write(pipe.precision.describe())
        tqdm.write(f"vocoder: {getattr(pipe.encoders, 'vocoder_name', 'the encoder set own')}")
    if pipe.untrained:
        tqdm.write(
            "soundvcm: warning: this checkpoint was never trained (random initialisation): it makes noise",
            file=sys.stderr,
        )
    bar = tqdm(jobs, desc="generate", unit="clip", disable=len(jobs) == 1, file=sys.stderr)
    for job in bar:
        try:
            result, written = run_job(pipe, job, out_dir, request)
        except (ValueError, OSError) as exc:
            if total == 1:
                raise
            failed += 1
            tqdm.write(f"soundvcm: error: {job.source}: {exc}", file=sys.stderr)
            continue
        for note in result.warnings:
            tqdm.write(f"soundvcm: warning: {job.source}: {note}", file=sys.stderr)
        # input -> outputs: in a batch, clip.avi and clip.mp4 write clip.* and clip_2.*
        outputs = ", ".join(map(str, written))
        tqdm.write(f"{job.source} -> {outputs} ({result.duration:.2f} s at {result.sample_rate} Hz)")
        if profile:
            tqdm.write(profile_table(result.timings, pipe.precision))
    if failed:
        print(f"soundvcm: {failed} of {total} job(s) failed", file=sys.stderr)
        return 1
    return 0
