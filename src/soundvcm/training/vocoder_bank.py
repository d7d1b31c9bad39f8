"""The teacher bank of a vocoder distillation (:mod:`soundvcm.training.vocoder`, step 1): segments of
the open data's training audio (Foley world, Big Buck Bunny, SFX; seeded), each ``context`` mel
frames long, vocoded by the teacher; written in chunks of safetensors, so an interrupted bank
resumes and a resumed bank is the same bank."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor
from tqdm import tqdm

from soundvcm.atomic import atomic_write, save_tensors
from soundvcm.encoders.hifigan import HiFiGAN
from soundvcm.media.audio import load_audio
from soundvcm.media.mel import MEL_HIFIGAN, mel_spectrogram
from soundvcm.training.vocoder import HOP, PEAK, SAMPLE_RATE, DistillConfig


def training_audio(data: Path) -> list[tuple[Path, float]]:
    """(file, weight) of the open data's training audio: Foley world 0.5, SFX 0.3, Big Buck Bunny 0.2
    (the weights spread over each part's files)."""
    parts = {"foley": 0.5, "sfx": 0.3, "bbb": 0.2}
    out: list[tuple[Path, float]] = []
    for part, weight in parts.items():
        tsv = data / part / "train.tsv"
        if not tsv.is_file():
            raise FileNotFoundError(f"{tsv} is missing: build the open data first with `soundvcm data open {data}`")
        files = [tsv.parent / line.split("\t")[0] for line in tsv.read_text().splitlines()[1:] if line.strip()]
        out += [(f.with_suffix(".flac"), weight / len(files)) for f in files]
    return out


def _segment(path: Path, frames: int, rng: np.random.Generator, min_peak: float = PEAK) -> Tensor | None:
    """A random ``frames``-long piece of ``path`` scaled to a peak of PEAK, or (min_peak < PEAK) to a
    peak drawn log-uniformly in [min_peak, PEAK]; None for silent or too short files."""
    wave, _ = load_audio(path, SAMPLE_RATE)
    need = frames * HOP
    if wave.numel() < need // 2 or wave.abs().max() < 1e-4:
        return None
    start = int(rng.integers(0, max(1, wave.numel() - need + 1)))
    seg = F.pad(wave[start : start + need], (0, max(0, need - wave[start : start + need].numel())))
    peak = PEAK if min_peak >= PEAK else float(np.exp(rng.uniform(np.log(min_peak), np.log(PEAK))))
    return seg * (peak / seg.abs().max())


def bank_chunks(folder: Path, cfg: DistillConfig) -> list[Path]:
    return [folder / f"bank_{i:04d}.safetensors" for i in range(math.ceil(cfg.segments / cfg.chunk))]


@torch.inference_mode()
def build_bank(data: Path, folder: Path, cfg: DistillConfig, teacher: HiFiGAN, dtype: torch.dtype | None) -> None:
    """Write the missing bank chunks: per segment its log-mel and the teacher's waveform (fp16)."""
    files = training_audio(data)
    weights = np.array([w for _, w in files])
    chunks = bank_chunks(folder, cfg)
    todo = [i for i, c in enumerate(chunks) if not c.is_file()]
    bar = tqdm(total=len(todo) * cfg.chunk, desc="teacher bank", unit="segment", file=sys.stderr, disable=None)
    for i in todo:
        rng = np.random.default_rng([cfg.seed, i])  # each chunk on its own: a resumed bank is the same bank
        mels: list[Tensor] = []
        waves: list[Tensor] = []
        while len(mels) < min(cfg.chunk, cfg.segments - i * cfg.chunk):
            path = files[int(rng.choice(len(files), p=weights / weights.sum()))][0]
            seg = _segment(path, cfg.context, rng, cfg.min_peak)
            if seg is None:
                continue
            mel = mel_spectrogram(seg[None], MEL_HIFIGAN)[:, :, : cfg.context]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
                wave = teacher(mel).float()
            mels.append(mel[0])
            waves.append(wave[0].clamp(-1, 1))
            bar.update(1)
        tensors = {"mel": torch.stack(mels).contiguous(), "wave": torch.stack(waves).half().contiguous()}
        _write_chunk(chunks[i], tensors)
    bar.close()


def _write_chunk(path: Path, tensors: dict[str, Tensor]) -> None:
    atomic_write(path, lambda tmp: save_tensors(tmp, tensors))


def load_bank(folder: Path, cfg: DistillConfig) -> tuple[Tensor, Tensor]:
    parts = [load_file(str(c)) for c in bank_chunks(folder, cfg)]
    return torch.cat([p["mel"] for p in parts]), torch.cat([p["wave"] for p in parts]).float()
