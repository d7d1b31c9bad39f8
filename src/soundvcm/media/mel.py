"""Log-mel spectrograms in torch, with the settings of MMAudio's VAEs and of HiFi-GAN.

``mel = log(max(M · sqrt(|STFT(x)|² + 1e-9), 1e-5))`` with a Slaney-scale, Slaney-normalised
filterbank M (librosa's default), Hann window, reflect padding of (n_fft - hop) / 2 on each side
and ``center=False``, so frame i starts at sample i·hop - (n_fft - hop) / 2. The 16 kHz setting
uses log10, the 44.1 kHz and HiFi-GAN settings the natural log.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class MelConfig:
    sample_rate: int
    n_fft: int
    hop_length: int
    win_length: int
    n_mels: int
    fmin: float = 0.0
    fmax: float | None = None
    log: str = "ln"  # "ln" or "log10"
    clip_val: float = 1e-5

    @property
    def pad(self) -> int:
        return (self.n_fft - self.hop_length) // 2

    def num_frames(self, num_samples: int) -> int:
        return (num_samples + 2 * self.pad - self.n_fft) // self.hop_length + 1


MEL_16K = MelConfig(16_000, 1024, 256, 1024, 80, 0.0, 8_000.0, log="log10")
MEL_44K = MelConfig(44_100, 2048, 512, 2048, 128, 0.0, 22_050.0, log="ln")
MEL_HIFIGAN = MelConfig(22_050, 1024, 256, 1024, 80, 0.0, 8_000.0, log="ln")  # HiFi-GAN V1 universal


def _hz_to_mel(f: Tensor) -> Tensor:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, math.log(6.4) / 27.0
    lin = f / f_sp
    return torch.where(f >= min_log_hz, min_log_mel + torch.log(f.clamp(min=1e-10) / min_log_hz) / logstep, lin)


def _mel_to_hz(m: Tensor) -> Tensor:
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, math.log(6.4) / 27.0
    return torch.where(m >= min_log_mel, min_log_hz * torch.exp(logstep * (m - min_log_mel)), f_sp * m)


@lru_cache(maxsize=16)
def mel_filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    fmin: float,
    fmax: float | None,
    htk: bool = False,
    norm: str | float | None = "slaney",
) -> Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters (librosa's definition).

    Slaney mel scale by default (``htk=True``: 2595 log10(1 + f / 700)); ``norm="slaney"`` gives
    each filter constant area, a number p gives it unit L_p norm, None leaves peaks at 1. Cached, and
    built as a normal tensor even under ``torch.inference_mode`` (so a bank built there can still
    be used in a loss that needs gradients).
    """
    with torch.inference_mode(False):
        return _filterbank(sample_rate, n_fft, n_mels, fmin, fmax, htk, norm)


def _filterbank(sample_rate, n_fft, n_mels, fmin, fmax, htk, norm) -> Tensor:
    fmax = sample_rate / 2 if fmax is None else fmax
    to_mel, to_hz = (_hz_to_mel_htk, _mel_to_hz_htk) if htk else (_hz_to_mel, _mel_to_hz)
    fft_freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    mel_pts = torch.linspace(
        to_mel(torch.tensor(fmin, dtype=torch.float64)).item(),
        to_mel(torch.tensor(fmax, dtype=torch.float64)).item(),
        n_mels + 2,
        dtype=torch.float64,
    )
    hz = to_hz(mel_pts)
    fdiff = hz.diff()
    ramps = hz[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = torch.clamp(torch.minimum(lower, upper), min=0)
    if norm == "slaney":
        weights *= (2.0 / (hz[2:] - hz[:-2]))[:, None]
    elif norm is not None:
        weights /= weights.norm(p=float(norm), dim=1, keepdim=True).clamp(min=1e-30)
    return weights.float()


def _hz_to_mel_htk(f: Tensor) -> Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def _mel_to_hz_htk(m: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_spectrogram(wave: Tensor, config: MelConfig) -> Tensor:
    """(..., samples) in [-1, 1] -> (..., n_mels, frames) log-mel."""
    shape = wave.shape
    x = wave.reshape(-1, shape[-1]).float().clamp(-1, 1)
    x = F.pad(x[:, None], (config.pad, config.pad), mode="reflect")[:, 0]
    window = torch.hann_window(config.win_length, device=x.device)
    spec = torch.stft(
        x,
        config.n_fft,
        hop_length=config.hop_length,
        win_length=config.win_length,
        window=window,
        center=False,
        onesided=True,
        return_complex=True,
    )
    mag = torch.sqrt(spec.real.square() + spec.imag.square() + 1e-9)
    fb = mel_filterbank(config.sample_rate, config.n_fft, config.n_mels, config.fmin, config.fmax).to(x.device)
    mel = torch.matmul(fb, mag).clamp(min=config.clip_val)
    mel = torch.log10(mel) if config.log == "log10" else torch.log(mel)
    return mel.reshape(*shape[:-1], config.n_mels, mel.shape[-1])


# ----- Kaldi's filterbank (PaSST's and ImageBind's front ends) ---------------------------------------
def kaldi_mel_banks(
    num_bins: int = 128, n_fft: int = 1024, sr: int = 32_000, fmin: float = 0.0, fmax: float = 15_000.0
) -> Tensor:
    """(num_bins, n_fft // 2 + 1): Kaldi's triangular mel filters, a zero Nyquist column appended."""

    def mel(f):
        return 1127.0 * torch.log(1.0 + f / 700.0)

    width = sr / n_fft
    lo, hi = mel(torch.tensor(fmin, dtype=torch.float64)), mel(torch.tensor(fmax, dtype=torch.float64))
    delta = (hi - lo) / (num_bins + 1)
    b = torch.arange(num_bins, dtype=torch.float64)[:, None]
    left, center, right = lo + b * delta, lo + (b + 1) * delta, lo + (b + 2) * delta
    m = mel(width * torch.arange(n_fft // 2, dtype=torch.float64))[None]
    banks = torch.clamp(torch.minimum((m - left) / (center - left), (right - m) / (right - center)), min=0.0)
    return F.pad(banks, (0, 1)).float()


def kaldi_fbank(wave: Tensor, sr: int = 16_000, bins: int = 128) -> Tensor:
    """Kaldi fbank (torchaudio.compliance.kaldi.fbank as ImageBind calls it): (frames, bins)."""
    size, shift, n_fft = int(sr * 0.025), int(sr * 0.010), 512
    frames = wave.double().unfold(0, size, shift)  # snip edges
    frames = frames - frames.mean(dim=1, keepdim=True)  # DC removal
    frames = torch.cat([frames[:, :1] * (1 - 0.97), frames[:, 1:] - 0.97 * frames[:, :-1]], dim=1)  # pre-emphasis
    window = 0.5 - 0.5 * torch.cos(2 * math.pi * torch.arange(size, dtype=torch.float64) / (size - 1))
    power = torch.fft.rfft(frames * window, n=n_fft).abs().square()
    banks = kaldi_mel_banks(bins, n_fft, sr, 20.0, sr / 2).double()
    return torch.log((power @ banks.T).clamp(min=torch.finfo(torch.float32).eps)).float()


def stitch_mels(mels: list[tuple[int, Tensor]], fade: int) -> Tensor:
    """One (1, mels, frames) log-mel from windows ``(start frame, (mels, frames))`` (a long video's
    generation windows): linear fades of ``fade`` frames where windows meet, blended as exp of the
    log-mel (magnitudes for the natural-log settings) and normalised by the summed weights, so a
    lone window's frames are exactly its own."""
    end = max(a + m.shape[-1] for a, m in mels)
    total = torch.zeros(mels[0][1].shape[0], end)
    weight = torch.zeros(end)
    for i, (a, m) in enumerate(mels):
        n = m.shape[-1]
        ramp = torch.ones(n)
        f = min(fade, n)
        if i > 0 and f:
            ramp[:f] = torch.linspace(0, 1, f + 2)[1:-1]
        if i < len(mels) - 1 and f:
            ramp[n - f :] = torch.minimum(ramp[n - f :], torch.linspace(1, 0, f + 2)[1:-1])
        total[:, a : a + n] += m.exp() * ramp
        weight[a : a + n] += ramp
    covered = int(torch.nonzero(weight > 0).max()) + 1
    return (total[:, :covered] / weight[:covered].clamp(min=1e-6)).clamp(min=1e-5).log()[None]
