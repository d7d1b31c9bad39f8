"""``soundvcm generate``: jobs from the command line, a folder or a TSV, written atomically.

Each job writes ``OUT/NAME.flac`` and, for a video, ``OUT/NAME.mp4`` (the video with the new
soundtrack). Files appear only when complete (temporary file, then rename); if muxing fails the
job's flac is removed as well. In batch mode a failing job is reported on one line and the
rest go on; the exit status is 1 if any job failed.

TSV batches: one job per row, tab-separated ``video<TAB>prompt`` (either may be empty; a header
row starting with ``video`` is skipped; relative paths are relative to the TSV).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from soundvcm.media.audio import write_audio
from soundvcm.media.errors import MediaError
from soundvcm.media.mux import mux_audio
from soundvcm.pipeline import STAGES, GenerationResult, Pipeline, StageTimer

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ts"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


@dataclass
class Job:
    name: str
    video: Path | None = None
    image: Path | None = None
    prompt: str | None = None


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
        return [Job(p.stem, video=p, prompt=prompt) for p in files]
    if source.suffix.lower() == ".tsv":
        return jobs_from_tsv(source, prompt)
    if source.suffix.lower() in IMAGE_SUFFIXES:
        return [Job(source.stem, image=source, prompt=prompt)]
    return [Job(source.stem, video=source, prompt=prompt)]


def jobs_from_tsv(path: Path, default_prompt: str | None) -> list[Job]:
    jobs, names = [], set()
    for i, line in enumerate(path.read_text().splitlines()):
        if not line.strip() or (i == 0 and line.lower().startswith("video")):
            continue
        cols = line.split("\t")
        video = cols[0].strip() or None
        prompt = (cols[1].strip() if len(cols) > 1 else "") or default_prompt
        if video is None and prompt is None:
            raise ValueError(f"{path}:{i + 1}: a row needs a video or a prompt")
        vpath = None if video is None else (path.parent / video if not Path(video).is_absolute() else Path(video))
        name = vpath.stem if vpath is not None else slug(prompt)
        base, k = name, 1
        while name in names:  # unique output names
            k += 1
            name = f"{base}_{k}"
        names.add(name)
        if vpath is not None and vpath.suffix.lower() in IMAGE_SUFFIXES:
            jobs.append(Job(name, image=vpath, prompt=prompt))
        else:
            jobs.append(Job(name, video=vpath, prompt=prompt))
    if not jobs:
        raise ValueError(f"{path}: no jobs in the TSV")
    return jobs


def run_job(
    pipe: Pipeline, job: Job, out_dir: Path, options: dict, full: bool = False
) -> tuple[GenerationResult, list[Path]]:
    timer = StageTimer(pipe.device)
    if job.video is not None and (out_dir / f"{job.name}.mp4").resolve() == job.video.resolve():
        raise ValueError(f"{job.video}: the output would overwrite the input video; choose another --out folder")
    if full and job.video is not None:
        options = {k: v for k, v in options.items() if k not in ("duration", "start")}
        result = pipe.generate_long(job.video, window=options.pop("window"), prompt=job.prompt, **options)
        start = 0.0
    else:
        options = {k: v for k, v in options.items() if k != "window"}
        result = pipe.generate(video=job.video, image=job.image, prompt=job.prompt, timer=timer, **options)
        start = options.get("start", 0.0)
    written = [write_audio(out_dir / f"{job.name}.flac", result.wave, result.sample_rate)]
    if job.video is not None:
        try:
            with timer("mux"):
                written.append(
                    mux_audio(job.video, result.wave, result.sample_rate, out_dir / f"{job.name}.mp4", start)
                )
        except BaseException:
            for p in written:
                p.unlink(missing_ok=True)
            raise
        result.timings["mux"] = timer.times.get("mux", 0.0)
    return result, written


def profile_table(timings: dict[str, float]) -> str:
    total = sum(timings.values())
    lines = ["| stage | seconds | share |", "|---|---:|---:|"]
    for stage in STAGES:
        if stage in timings:
            lines.append(f"| {stage} | {timings[stage]:.3f} | {timings[stage] / total:.1%} |")
    lines.append(f"| total | {total:.3f} | 100% |")
    return "\n".join(lines)


def run_generate(pipe: Pipeline, jobs: list[Job], out_dir: Path, options: dict, full: bool, profile: bool) -> int:
    failed = 0
    bar = tqdm(jobs, desc="generate", unit="clip", disable=len(jobs) == 1, file=sys.stderr)
    for job in bar:
        try:
            result, written = run_job(pipe, job, out_dir, dict(options), full)
        except (ValueError, OSError) as exc:
            if len(jobs) == 1:
                raise
            failed += 1
            tqdm.write(f"soundvcm: error: {job.name}: {exc}", file=sys.stderr)
            continue
        for note in result.warnings:
            tqdm.write(f"soundvcm: warning: {job.name}: {note}", file=sys.stderr)
        tqdm.write(f"{job.name}: {result.duration:.2f} s at {result.sample_rate} Hz -> {', '.join(map(str, written))}")
        if profile:
            tqdm.write(profile_table(result.timings))
    if failed:
        print(f"soundvcm: {failed} of {len(jobs)} job(s) failed", file=sys.stderr)
        return 1
    return 0
