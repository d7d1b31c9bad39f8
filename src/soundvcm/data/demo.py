"""Demo media made on the spot: a synthetic 720p clip with moving shapes and a click track, for
benchmarks and smoke runs that need a realistic file size and codec without shipping one."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def synthetic_clip(path: Path, duration: float = 8.0, size: tuple[int, int] = (1280, 720), fps: int = 24) -> Path:
    """Moving squares over a gradient, with a click track in AAC: a stand-in for a real clip."""
    w, h = size
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:h, 0:w]
    background = ((xs / w * 120) + (ys / h * 60)).astype(np.uint8)
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"preset": "veryfast", "crf": "23"}
        aus = c.add_stream("aac", rate=44_100)
        aus.layout = "mono"
        for i in range(int(duration * fps)):
            img = np.repeat(background[:, :, None], 3, axis=2)
            for k in range(3):
                x = int((w - 100) * (0.5 + 0.5 * np.sin(i / fps * (1 + k) + k)))
                y = int((h - 100) * (0.5 + 0.5 * np.cos(i / fps * (0.7 + k))))
                img[y : y + 100, x : x + 100] = (80 * k, 200, 255 - 60 * k)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for p in vs.encode(frame):
                c.mux(p)
        for p in vs.encode(None):
            c.mux(p)
        n = int(duration * 44_100)
        audio = (rng.standard_normal(n) * 0.01).astype(np.float32)
        audio[:: 44_100 // 2] = 0.8
        for i in range(0, n, 1024):
            af = av.AudioFrame.from_ndarray(audio[None, i : i + 1024], format="fltp", layout="mono")
            af.sample_rate, af.pts = 44_100, i
            for p in aus.encode(af):
                c.mux(p)
        for p in aus.encode(None):
            c.mux(p)
    return path
