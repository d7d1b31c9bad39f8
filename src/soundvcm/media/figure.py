"""``generate --plot``: a PNG of what was generated, its log-mel spectrogram, and with a video the
frames above it on the same time axis (each frame from the time it is on screen), so that a
glance tells whether sounds start where things happen."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from torch import Tensor

from soundvcm.atomic import atomic_write
from soundvcm.media.mel import MelConfig, mel_spectrogram


def soundtrack_figure(
    path: Path,
    wave: Tensor,
    sample_rate: int,
    video: Path | None = None,
    start: float = 0.0,
    frames: int = 8,
    title: str | None = None,
) -> Path:
    """Write ``path`` (PNG): ``frames`` evenly spaced video frames over the spectrogram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    duration = wave.numel() / sample_rate
    mel = MelConfig(sample_rate, 1024, 256, 1024, 80, 0.0, min(8000.0, sample_rate / 2), log="ln")
    spec = mel_spectrogram(wave.float()[None], mel)[0].clamp(min=math.log(1e-5)).numpy()
    images = _frames(video, start, duration, frames) if video is not None else []
    rows = 2 if images else 1
    fig = plt.figure(figsize=(10, 4.2 if images else 2.8))
    grid = fig.add_gridspec(rows, 1, height_ratios=[1.0, 1.6] if images else [1.0], hspace=0.08)
    if images:
        top = fig.add_subplot(grid[0])
        width = duration / len(images)
        for t, img in images:
            top.imshow(img, extent=(t, t + width, 0, 1), aspect="auto")  # shown from t on
        top.set_xlim(0, duration)
        top.set_ylim(0, 1)
        top.set_yticks([])
        top.set_xticks([])
    ax = fig.add_subplot(grid[-1])
    ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", extent=(0, duration, 0, spec.shape[0]))
    ax.set_xlabel(f"time (s){f' from {start:g} s of the video' if video is not None and start else ''}")
    ax.set_ylabel("mel band")
    fig.suptitle(title or f"{duration:.2f} s at {sample_rate} Hz", fontsize=9)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png", bbox_inches="tight"))
    plt.close(fig)
    return path


def _frames(video: Path, start: float, duration: float, count: int) -> list[tuple[float, np.ndarray]]:
    """(time from ``start``, RGB frame) for ``count`` frames: the frame on screen at i / fps."""
    from soundvcm.media.video import FrameSpec, load_video

    fps = count / duration
    clip = load_video(
        video, {"f": FrameSpec(fps=fps, height=90, width=90, fit="short")}, duration=duration, start=start
    )
    out = clip.frames["f"].permute(0, 2, 3, 1).numpy()
    return [(i / fps, img) for i, img in enumerate(out[:count])]
