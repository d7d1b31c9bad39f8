"""``soundvcm bench sync``: A/V alignment of muxed outputs on real clips (issue 24's goal).

Each video of a folder is muxed with silence (``media.mux.mux_audio``) from its start (the copy
path for H.264/HEVC/MPEG-4/AV1) and from ``--start`` seconds in (the re-encode path). Real clips
carry no frame counters, so the alignment is read from the pictures: for the first ``frames``
pictures of the output, at output time t (audio sample 0 = time 0), the input frame on screen at
start + t is looked up by timestamp, and the mean pixel error of the output picture against that
frame shifted by k = -3..3 frames is summed over the pictures. The shift with the least error is
the alignment error in frames (0 = in sync; re-encodes are lossy, so the error at 0 is small but
not zero). The first picture's time against the audio's start is reported as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from soundvcm.media.mux import mux_audio
from soundvcm.media.video import open_media, probe

SHIFTS = range(-3, 4)
SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}


@dataclass
class SyncRow:
    clip: str
    codec: str
    fps: float
    start: float
    first_picture_s: float  # output time of the first picture (0 = with the sound)
    best_shift: int  # frames; 0 = in sync
    error_by_shift: dict[int, float]

    @property
    def in_sync(self) -> bool:
        return self.best_shift == 0 and abs(self.first_picture_s) <= 0.5 / self.fps


def _pictures(path: Path) -> list[tuple[float, np.ndarray]]:
    with open_media(path) as c:
        out = [(float(f.time), f.to_ndarray(format="gray").astype(np.float32)) for f in c.decode(c.streams.video[0])]
    return sorted(out, key=lambda x: x[0])


def _audio_start(path: Path) -> float:
    with open_media(path) as c:
        return float(next(c.decode(c.streams.audio[0])).time)


def measure(src: Path, out_dir: Path, start: float, seconds: float = 3.0, frames: int = 40) -> SyncRow:
    info = probe(src)
    source = _pictures(src)
    times = np.array([t for t, _ in source]) - info.first_time
    out = mux_audio(src, torch.zeros(int(16_000 * seconds)), 16_000, out_dir / f"{src.stem}_{start:g}.mp4", start=start)
    a0 = _audio_start(out)
    shown = _pictures(out)[:frames]
    error = {}
    for k in SHIFTS:
        total = 0.0
        for t, img in shown:
            j = int(np.clip(np.searchsorted(times, start + t - a0 + 1e-6) - 1 + k, 0, len(source) - 1))
            ref = source[j][1]
            total += float(np.abs(img - ref).mean()) if ref.shape == img.shape else float("inf")
        error[k] = total / len(shown)
    return SyncRow(src.name, info.codec, info.fps, start, shown[0][0] - a0, min(error, key=error.__getitem__), error)


def run_sync_bench(folder: Path, out_dir: Path, start: float = 1.5, progress=None) -> list[SyncRow]:
    clips = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in SUFFIXES)
    if not clips:
        raise ValueError(f"{folder}: no video files ({', '.join(sorted(SUFFIXES))})")
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for clip in clips:
        for s in (0.0, start):
            rows.append(measure(clip, out_dir, s))
            if progress is not None:
                progress(rows[-1])
    return rows


def table(rows: list[SyncRow]) -> str:
    lines = [
        "| clip | codec | fps | start s | first picture s | best shift (frames) | error at -1 / 0 / +1 | in sync |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        e = r.error_by_shift
        lines.append(
            f"| {r.clip} | {r.codec} | {r.fps:.3f} | {r.start:g} | {r.first_picture_s:+.4f} | {r.best_shift:+d} | "
            f"{e[-1]:.2f} / {e[0]:.2f} / {e[1]:.2f} | {'yes' if r.in_sync else 'NO'} |"
        )
    return "\n".join(lines)
