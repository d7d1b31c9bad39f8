"""``soundvcm bench vocoder``: the vocoder's first (cold) and second (warm) call per process, in one
pass and in windows of one length (issue 22).

With native bf16, oneDNN's kernels cost several warm calls the first time a process meets a new
input length; a CLI run vocodes once, so the cold time is what a user waits. Each setting runs in
a fresh process (``python -m soundvcm.bench.vocoder_cold WINDOW FRAMES PRECISION`` prints one JSON
line): window 0 is one pass, N > 0 windows of N + 2 x 16 frames
(:func:`soundvcm.encoders.hifigan.vocode_in_chunks`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import torch


def measure(window: int, frames: int, precision: str, vocoder: str = "hifigan") -> dict:
    """Cold and warm seconds of vocoding ``frames`` random mel frames in this process with ``vocoder``
    (``hifigan``, ``fast`` or a ``soundvcm vocoder export`` stem)."""
    from soundvcm.encoders import load_encoder_set
    from soundvcm.encoders.base import autocast
    from soundvcm.encoders.hifigan import vocode_in_chunks

    enc = load_encoder_set("lite", precision=precision, vocoder=vocoder)
    mel = torch.randn(1, 80, frames, generator=torch.Generator().manual_seed(0)) - 5

    def vocode(m):
        return enc.vocoder(m).float()

    times = []
    for _ in range(2):
        start = time.perf_counter()
        with torch.inference_mode(), autocast(enc.device, enc.vocoder_dtype):
            vocode(mel) if window == 0 else vocode_in_chunks(vocode, mel, 256, chunk=window)
        times.append(time.perf_counter() - start)
    dtype = "bf16" if enc.vocoder_dtype == torch.bfloat16 else "fp32"
    doc = {"window": window, "frames": frames, "precision": dtype, "cold_s": times[0], "warm_s": times[1]}
    return {"vocoder": enc.vocoder_name, **doc}


def run(windows: tuple[int, ...], frames: int, precision: str, vocoders: tuple[str, ...] = ("hifigan",)) -> list[dict]:
    """One fresh process per vocoder and window setting."""
    rows = []
    for v in vocoders:
        for w in windows:
            cmd = [sys.executable, "-m", "soundvcm.bench.vocoder_cold", str(w), str(frames), precision, v]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| vocoder | vocoding | precision | cold s | warm s |", "|---|---|---|---|---|"]
    for r in rows:
        what = "one pass" if r["window"] == 0 else f"windows of {r['window']} + 2 x 16 frames"
        cells = (
            r["vocoder"],
            f"{what} ({r['frames']} frames)",
            r["precision"],
            f"{r['cold_s']:.3g}",  # three significant digits: a tiny student's ms stay non-zero
            f"{r['warm_s']:.3g}",
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    from soundvcm.allocator import tune_malloc

    tune_malloc()  # the heap a CLI run has (soundvcm.cli applies it before any command)
    print(json.dumps(measure(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], *sys.argv[4:5])))


def stage_times(frames: int = 160, repeats: int = 5, bf16: bool = False) -> list[float]:
    """Best-of-``repeats`` seconds of HiFi-GAN V1's trunk cut after 0, 1, ..., 4 upsampling stages
    (:meth:`HiFiGAN.trunk`) on ``frames`` random mel frames, in this process (random weights: the
    cost does not depend on them): where the vocoder's time is, stage by stage (issue 35)."""
    from soundvcm.encoders.hifigan import HiFiGAN

    model = HiFiGAN().eval()
    mel = torch.randn(1, 80, frames, generator=torch.Generator().manual_seed(0)) - 5
    times = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for stages in range(len(model.ups) + 1):
            model.trunk(mel, stages)  # the first call at a length costs extra (module docstring)
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                model.trunk(mel, stages)
                best = min(best, time.perf_counter() - start)
            times.append(best)
    return times


def stage_table(rows: dict[str, list[float]]) -> str:
    """One row per precision: seconds after each number of stages, and the whole over the first two."""
    head = "| precision | conv_pre | + stage 1 | + stage 2 | + stage 3 | + stage 4 (all) | all / first two |"
    lines = [head, "|" + "---|" * 7]
    for name, t in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.4f}" for v in t) + f" | {t[-1] / t[2]:.2f}x |")
    return "\n".join(lines)
