"""``soundvcm bench pipeline``: per-stage times of ``soundvcm generate`` for one clip.

For each network (random-initialised, on its own lite encoder set, ``lite`` or ``lite2``, or
sized for ``lite`` when its own set is the paper's, whose weights are not offline: ``lite``, the
27.9M network, ``lite2_small``, ``small_16k``; or trained models by name or path, ``--models default``), each
precision (``--precisions auto,fp32,bf16``: :mod:`soundvcm.precision`) and each sampler setting
(1 NFE consistency, 25 x 2 NFE Euler + CFG), the same clip goes through decode, visual, sync,
text, network, latent decode, vocoder and mux; model loading is excluded. Every setting runs
``repeats`` times after one warm-up and the median of each stage is reported, with the 25 x 2 /
1 NFE ratio from the same run. Without ``--video`` an 8 s 1280 x 720 24 fps H.264 + AAC clip with
moving shapes is synthesised first. Each row carries the precision plan it ran under.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from soundvcm.data.demo import synthetic_clip
from soundvcm.encoders import encoder_spec
from soundvcm.media.mux import mux_audio
from soundvcm.network.checkpoint import save_network
from soundvcm.network.config import PRESET_ENCODERS
from soundvcm.network.mmdit import MMDiT
from soundvcm.pipeline import STAGES, Pipeline, StageTimer
from soundvcm.spec import ModelSpec, preset_for_encoders


@dataclass(frozen=True)
class PipelineBenchConfig:
    video: str | None = None
    duration: float = 8.0
    networks: tuple[str, ...] = ("lite", "small_16k")
    settings: tuple[tuple[str, str, int], ...] = (("1 NFE", "consistency", 1), ("25x2 NFE", "euler", 25))
    repeats: int = 2
    prompt: str | None = "footsteps on gravel"
    models: tuple[str, ...] = ()  # trained models (names or paths) timed after the random networks
    precisions: tuple[str, ...] = ("auto",)


def run_pipeline_bench(cfg: PipelineBenchConfig, progress=None) -> list[dict[str, Any]]:
    if progress is None:

        def progress(line: str) -> None:
            print(line, file=sys.stderr)

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        video = Path(cfg.video) if cfg.video else synthetic_clip(tmp / "clip.mp4", cfg.duration)
        models: list[tuple[str, str | Path]] = []
        for name in cfg.networks:
            own = PRESET_ENCODERS.get(name, "lite")
            config, encoder_set = preset_for_encoders(name, own if encoder_spec(own).offline else "lite")
            torch.manual_seed(0)
            spec = ModelSpec.create(name, encoder_set, "vcm", network_config=config).to_dict()
            save_network(tmp / name, MMDiT(config), preset=name, encoder_set=encoder_set, objective="vcm", spec=spec)
            models.append((name, tmp / name))
        models += [(m, m) for m in cfg.models]
        for label, model in models:
            for precision in cfg.precisions:
                pipe = Pipeline.load(model, device="cpu", precision=precision)
                settings = cfg.settings if label in cfg.networks else ((f"{pipe.default_sampler()}", None, None),)
                rows += [_time_setting(cfg, pipe, label, setting, video, tmp, progress) for setting in settings]
    return rows


def _time_setting(cfg: PipelineBenchConfig, pipe: Pipeline, label: str, setting, video: Path, tmp: Path, progress):
    name, sampler, steps = setting
    runs = []
    for r in range(cfg.repeats + 1):  # the first run warms up and is dropped
        timer = StageTimer(pipe.device)
        options = pipe.sampler(sampler, steps=steps)
        res = pipe.generate(video=video, prompt=cfg.prompt, duration=cfg.duration, options=options, timer=timer)
        with timer("mux"):
            mux_audio(video, res.wave, res.sample_rate, tmp / "out.mp4")
        if r > 0:
            runs.append(dict(timer.times))
        progress(f"  {label} {pipe.precision.requested} {name} run {r}: {sum(timer.times.values()):.2f} s")
    stages = {s: statistics.median(run.get(s, 0.0) for run in runs) for s in STAGES}
    params = sum(p.numel() for p in pipe.net.parameters())
    return {
        "network": label,
        "params": params,
        "setting": name,
        "nfe": res.nfe,
        "stages": stages,
        "total": sum(stages.values()),
        "precision": pipe.precision.to_dict(),
    }


def _precision(row: dict[str, Any]) -> str:
    plan = row["precision"]
    chosen = sorted(set(plan["stages"].values()))
    return f"{plan['requested']} ({'/'.join(chosen)})" if plan["requested"] == "auto" else plan["requested"]


def table(rows: list[dict[str, Any]]) -> str:
    head = "| network | precision | setting | NFE | " + " | ".join(STAGES) + " | total s | vs 1 NFE |"
    lines = [head, "|" + "---|" * (len(STAGES) + 6)]
    base = {(r["network"], _precision(r)): r["total"] for r in rows if r["nfe"] == 1}
    for r in rows:
        cells = " | ".join(f"{r['stages'][s]:.2f}" for s in STAGES)
        key = (r["network"], _precision(r))
        ratio = r["total"] / base[key] if key in base else float("nan")
        lines.append(
            f"| {r['network']} ({r['params'] / 1e6:.1f}M) | {_precision(r)} | {r['setting']} | {r['nfe']} | {cells} | "
            f"{r['total']:.2f} | {ratio:.2f}x |"
        )
    lines.append("")
    lines.append("Stage shares of the 1 NFE runs:")
    for r in rows:
        if r["nfe"] == 1:
            shares = ", ".join(f"{s} {r['stages'][s] / r['total']:.0%}" for s in STAGES if r["stages"][s] > 0)
            lines.append(f"- {r['network']} {_precision(r)}: {shares}")
    return "\n".join(lines)
