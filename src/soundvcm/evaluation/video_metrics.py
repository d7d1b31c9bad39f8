"""Metrics that need the videos: IB-Score (ImageBind, video vs audio) and DeSync (Synchformer).

Each prediction is paired with the video named as its ground truth (or as itself); predictions
without a video, or whose frames do not decode, are listed in the report and left out; a metric
whose weights are missing is reported as not computed (``soundvcm weights download ...``).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from soundvcm.media.errors import MediaError


def video_index(video_dir: Path) -> dict[str, Path]:
    """Videos by stem (predictions pair with the video of their ground-truth name, or their own)."""
    return {p.stem: p for p in Path(video_dir).iterdir() if p.is_file()}


def desync(
    pairs: list[tuple[str, str]], waves: dict[str, torch.Tensor], video_dir: Path, length: float, report
) -> float | None:
    """Mean DeSync (s) of predictions against their videos, with the full Synchformer."""
    from soundvcm.evaluation.synchformer import SYNCHFORMER_WEIGHTS, desync_seconds, load_synchformer
    from soundvcm.media.video import FrameSpec

    model = _load_or_note(load_synchformer, SYNCHFORMER_WEIGHTS, report, "DeSync")
    if model is None:
        return None
    spec = {"sync": FrameSpec(25.0, 224, 224, fit="crop")}
    scores = _per_video(pairs, waves, video_dir, length, report, "desync", spec, partial(desync_seconds, model))
    return sum(scores) / len(scores) if scores else None


def _per_video(pairs, waves, video_dir: Path, length: float, report, metric: str, spec, score) -> list:
    """``score(frames, wave)`` for each prediction that has its video (named as its ground truth, or as
    itself) and whose frames decode; the others are listed in ``report[metric + "_skipped"]``."""
    from soundvcm.media.video import load_video

    videos = video_index(video_dir)
    name = next(iter(spec))
    out = []
    for p, g in pairs:
        video = videos.get(g) or videos.get(p)
        if video is None or p not in waves:
            report.setdefault(f"{metric}_skipped", []).append(f"{p}: no video named {g}.*")
            continue
        try:
            out.append(score(load_video(video, spec, duration=length).frames[name], waves[p]))
        except (MediaError, ValueError) as exc:
            report.setdefault(f"{metric}_skipped", []).append(f"{p}: {exc}")
    return out


def _load_or_note(load, weights, report, metric: str):
    """The metric's model, or None with the reason in ``report["not_computed"]``."""
    from soundvcm.weights import WeightsError, resolve

    try:
        return load(resolve(weights))
    except WeightsError as exc:
        report["not_computed"][metric] = str(exc)
        return None


def ib_score(
    pairs: list[tuple[str, str]], waves: dict[str, torch.Tensor], video_dir: Path, length: float, report
) -> float | None:
    """IB-Score: 100 x mean cosine between ImageBind embeddings of each video and its prediction."""
    from soundvcm.evaluation.imagebind import IMAGEBIND_WEIGHTS, VIDEO_FPS, audio_clips, load_imagebind, video_clips
    from soundvcm.evaluation.metrics import ib_score as ib_metric
    from soundvcm.media.video import FrameSpec

    model = _load_or_note(load_imagebind, IMAGEBIND_WEIGHTS, report, "IB-Score")
    if model is None:
        return None

    def embed(frames, wave):
        return model.encode_vision(video_clips(frames)).mean(0), model.encode_audio(audio_clips(wave)).mean(0)

    with torch.inference_mode():
        spec = {"ib": FrameSpec(VIDEO_FPS, 224, 224, fit="short")}
        pairs_ = _per_video(pairs, waves, video_dir, length, report, "ib", spec, embed)
    return ib_metric(torch.stack([v for v, _ in pairs_]), torch.stack([a for _, a in pairs_])) if pairs_ else None
