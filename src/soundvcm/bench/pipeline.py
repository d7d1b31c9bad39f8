"""``soundvcm bench pipeline``: per-stage times of ``soundvcm generate`` for one clip.

For each network (random-initialised, sized for the lite encoders: ``lite``, the tiny 27.9M
network, and ``small_16k``) and each sampler setting (1 NFE consistency, 25 x 2 NFE Euler + CFG),
the same clip goes through decode, visual, sync, text, network, latent decode, vocoder and mux;
model loading is excluded. Every setting runs ``repeats`` times after one warm-up and the median
of each stage is reported, with the 25 x 2 / 1 NFE ratio from the same run. Without ``--video``
an 8 s 1280 x 720 24 fps H.264 + AAC clip with moving shapes is synthesised first.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch

from soundvcm.media.mux import mux_audio
from soundvcm.network.checkpoint import save_network
from soundvcm.network.mmdit import MMDiT, preset_for_encoders
from soundvcm.pipeline import STAGES, Pipeline, StageTimer


@dataclass(frozen=True)
class PipelineBenchConfig:
    video: str | None = None
    duration: float = 8.0
    networks: tuple[str, ...] = ("lite", "small_16k")
    settings: tuple[tuple[str, str, int], ...] = (("1 NFE", "consistency", 1), ("25x2 NFE", "euler", 25))
    repeats: int = 2
    prompt: str | None = "footsteps on gravel"


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


def run_pipeline_bench(cfg: PipelineBenchConfig, progress=None) -> list[dict[str, Any]]:
    if progress is None:

        def progress(line: str) -> None:
            print(line, file=sys.stderr)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = Path(cfg.video) if cfg.video else synthetic_clip(tmp / "clip.mp4", cfg.duration)
        for name in cfg.networks:
            config, encoder_set = preset_for_encoders(name, "lite")
            torch.manual_seed(0)
            net = MMDiT(config)
            params = sum(p.numel() for p in net.parameters())
            save_network(tmp / name, net, preset=name, encoder_set=encoder_set, objective="vcm")
            pipe = Pipeline.load(tmp / name, device="cpu")
            for label, sampler, steps in cfg.settings:
                runs = []
                for r in range(cfg.repeats + 1):  # the first run warms up and is dropped
                    timer = StageTimer(pipe.device)
                    res = pipe.generate(
                        video=video, prompt=cfg.prompt, duration=cfg.duration, sampler=sampler, steps=steps, timer=timer
                    )
                    with timer("mux"):
                        mux_audio(video, res.wave, res.sample_rate, tmp / "out.mp4")
                    if r > 0:
                        runs.append(dict(timer.times))
                    progress(f"  {name} {label} run {r}: {sum(timer.times.values()):.2f} s")
                stages = {s: statistics.median(run.get(s, 0.0) for run in runs) for s in STAGES}
                rows.append(
                    {
                        "network": name,
                        "params": params,
                        "setting": label,
                        "nfe": res.nfe,
                        "stages": stages,
                        "total": sum(stages.values()),
                    }
                )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    head = "| network | setting | NFE | " + " | ".join(STAGES) + " | total s | vs 1 NFE |"
    lines = [head, "|" + "---|" * (len(STAGES) + 5)]
    base = {r["network"]: r["total"] for r in rows if r["nfe"] == 1}
    for r in rows:
        cells = " | ".join(f"{r['stages'][s]:.2f}" for s in STAGES)
        ratio = r["total"] / base[r["network"]] if r["network"] in base else float("nan")
        lines.append(
            f"| {r['network']} ({r['params'] / 1e6:.1f}M) | {r['setting']} | {r['nfe']} | {cells} | "
            f"{r['total']:.2f} | {ratio:.2f}x |"
        )
    lines.append("")
    lines.append("Stage shares of the 1 NFE runs:")
    for r in rows:
        if r["nfe"] == 1:
            shares = ", ".join(f"{s} {r['stages'][s] / r['total']:.0%}" for s in STAGES if r["stages"][s] > 0)
            lines.append(f"- {r['network']}: {shares}")
    return "\n".join(lines)
