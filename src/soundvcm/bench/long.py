"""``soundvcm bench long``: memory of ``generate --full`` as the video grows (issue 34).

A long video is generated window by window; nothing a window leaves behind may pile up. For each
length, a synthetic clip (a moving gradient, H.264, no sound) is written, ``soundvcm generate CLIP
--full`` runs in a fresh process, and that process's resident memory (``VmRSS``) is sampled every
0.2 s. The table gives each run's peak, its ratio to the shortest run's, and the resident memory
at a quarter, half, three quarters and the end of the run: flat after the first windows means
the growth stays small however long the video is (the goal: a 10-minute run within 1.2x the peak
of a 1-minute run).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


@dataclass(frozen=True)
class LongRun:
    minutes: float
    peak_mb: float
    seconds: float
    profile_mb: tuple[float, ...]  # resident memory at 25, 50, 75 and 100 % of the run


def write_clip(path: Path, seconds: float, size: tuple[int, int] = (96, 64), fps: int = 24) -> Path:
    """A silent H.264 clip of a gradient moving one pixel per frame, written frame by frame
    (nothing of the whole clip is held in memory)."""
    w, h = size
    base = np.add.outer(np.arange(h) * 2, np.arange(w) * 3).astype(np.uint8)
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "30"}
        for i in range(int(seconds * fps)):
            img = np.stack([np.roll(base, i, axis=1), np.roll(base, 2 * i, axis=0), base], axis=-1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def sample_rss(argv: list[str], every: float = 0.2) -> tuple[int, list[tuple[float, float]], str]:
    """Run ``argv``; (exit status, [(seconds since start, resident MiB)], stderr)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    samples: list[tuple[float, float]] = []
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.append(proc.stderr.read() if proc.stderr else ""), daemon=True)
    reader.start()
    while proc.poll() is None:
        rss = _rss_mb(proc.pid)
        if rss is not None:
            samples.append((time.perf_counter() - start, rss))
        time.sleep(every)
    reader.join()
    return proc.returncode, samples, "".join(err)


def run_long(minutes: list[float], model: str = "default", extra: tuple[str, ...] = ()) -> list[LongRun]:
    """One ``generate --full`` per length, each in a fresh process (see the module docstring)."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="soundvcm-long-") as tmp:
        for m in minutes:
            clip = write_clip(Path(tmp) / f"clip_{m:g}min.mp4", 60.0 * m)
            argv = [sys.executable, "-m", "soundvcm.cli", "generate", str(clip), "--full", "--model", model]
            code, samples, err = sample_rss([*argv, "--out", str(Path(tmp) / "out"), "--overwrite", *extra])
            if code != 0 or not samples:
                raise RuntimeError(f"generate --full of {m:g} min failed (exit {code}): {err.strip()[-400:]}")
            total = samples[-1][0]
            profile = tuple(max(r for t, r in samples if t <= q * total + 1e-9) for q in (0.25, 0.5, 0.75, 1.0))
            runs.append(LongRun(m, max(r for _, r in samples), total, profile))
    return runs


def table(runs: list[LongRun]) -> str:
    first = runs[0].peak_mb
    lines = [
        "| video | peak RSS (MiB) | x shortest | RSS at 25 / 50 / 75 / 100 % of the run | wall (s) |",
        "|---|---:|---:|---|---:|",
    ]
    for r in runs:
        profile = " / ".join(f"{v:.0f}" for v in r.profile_mb)
        lines.append(f"| {r.minutes:g} min | {r.peak_mb:.0f} | {r.peak_mb / first:.2f} | {profile} | {r.seconds:.1f} |")
    return "\n".join(lines)
