"""Audio decoding (PyAV: any container FFmpeg reads), high-quality resampling (soxr) and writing
(soundfile: flac/wav, atomically).

Waveforms are float32 tensors in [-1, 1], mono ``(samples,)`` unless ``mono=False`` gives
``(channels, samples)``.
"""

from __future__ import annotations

import math
import shutil
import warnings
from pathlib import Path

import av
import numpy as np
import soundfile as sf
import soxr
import torch
from torch import Tensor

from soundvcm.atomic import atomic_write
from soundvcm.media.errors import MediaError, check_input_path


def resample(wave: Tensor | np.ndarray, orig_sr: int, target_sr: int) -> Tensor:
    """Band-limited resampling with soxr's very-high-quality sinc filter; (..., samples)."""
    x = torch.as_tensor(wave, dtype=torch.float32)
    if orig_sr == target_sr:
        return x.clone()
    flat = x.reshape(-1, x.shape[-1]).numpy().T  # soxr wants (frames, channels)
    y = soxr.resample(np.ascontiguousarray(flat), orig_sr, target_sr, quality="VHQ")
    y = torch.from_numpy(np.ascontiguousarray(y.T if y.ndim == 2 else y[None]))
    return y.reshape(*x.shape[:-1], y.shape[-1])


def load_audio(
    path: str | Path,
    sample_rate: int | None = None,
    start: float = 0.0,
    duration: float | None = None,
    mono: bool = True,
) -> tuple[Tensor, int]:
    """Decode the first audio stream; mix to mono; resample to ``sample_rate`` (None: native).

    Returns (wave, sample_rate). Raises MediaError when there is no audio stream or nothing
    decodes; corrupt packets are skipped with a warning.
    """
    path = check_input_path(path)
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise MediaError(f"{path}: not a readable media file ({exc.__class__.__name__}: {exc})") from exc
    chunks: list[np.ndarray] = []
    skipped = 0
    with container:
        if not container.streams.audio:
            raise MediaError(f"{path}: no audio stream")
        stream = container.streams.audio[0]
        native_sr = stream.codec_context.sample_rate or stream.rate
        resampler = av.AudioResampler(format="fltp", layout=None, rate=native_sr)
        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except (av.error.InvalidDataError, av.error.FFmpegError):
                    skipped += 1
                    continue
                for frame in frames:
                    for out in resampler.resample(frame):
                        chunks.append(out.to_ndarray())
        except av.error.FFmpegError:
            skipped += 1
    if not chunks:
        raise MediaError(f"{path}: no audio could be decoded")
    if skipped:
        warnings.warn(f"{path.name}: skipped {skipped} corrupt audio packet(s)", stacklevel=2)
    channels = min(c.shape[0] for c in chunks)
    wave = torch.from_numpy(np.concatenate([c[:channels] for c in chunks], axis=1).astype(np.float32))
    if mono:
        wave = wave.mean(0)
    a = int(round(start * native_sr))
    b = None if duration is None else a + int(round(duration * native_sr))
    wave = wave[..., a:b]
    if sample_rate is not None and sample_rate != native_sr:
        wave = resample(wave, native_sr, sample_rate)
        native_sr = sample_rate
    return wave.clamp(-1, 1), native_sr


PEAK_DBFS = -1.0
"""The loudest *true* peak soundvcm writes: -1 dBTP, headroom that keeps the AAC track below full scale."""

OVERSAMPLE = 4  # ITU-R BS.1770-4 Annex 2: true peak = the peak of the 4x oversampled signal
_TAPS_PER_PHASE = 12


def _interpolator(oversample: int = OVERSAMPLE, taps: int = _TAPS_PER_PHASE) -> Tensor:
    """(oversample, 1, taps) polyphase FIR: phase k interpolates the signal at k / oversample of a
    sample past each input sample (a Hann-windowed sinc; phase 0 is the sample itself)."""
    n = torch.arange(taps, dtype=torch.float64) - (taps // 2 - 1)  # taps around the current sample
    phases = []
    for k in range(oversample):
        x = n - k / oversample
        h = torch.sinc(x) * torch.cos(math.pi * x / (taps + 1)).pow(2)  # Hann, zero at +-(taps + 1) / 2
        phases.append(h / h.sum())
    return torch.stack(phases)[:, None].float()  # conv1d correlates: tap j weighs sample i + j - (taps/2 - 1)


def true_peak(wave: Tensor, block: int = 1 << 20) -> float:
    """The largest |sample| of ``wave`` oversampled 4x (BS.1770's true peak, linear): the peak a
    D/A converter or a lossy codec's reconstruction reaches between samples, which can exceed the
    sample peak by up to ~3 dB on a near-square wave. Computed in blocks, so memory stays flat."""
    x = torch.as_tensor(wave, dtype=torch.float32).detach().reshape(-1)
    if x.numel() == 0:
        return 0.0
    h = _interpolator()
    taps = h.shape[-1]
    left, right = taps // 2 - 1, taps - taps // 2
    padded = torch.nn.functional.pad(x[None, None], (left, right))[0, 0]
    peak = float(x.abs().max())
    for a in range(0, x.numel(), block):
        chunk = padded[a : min(x.numel(), a + block) + left + right]
        peak = max(peak, float(torch.nn.functional.conv1d(chunk[None, None], h).abs().max()))
    return peak


def limit_peak(wave: Tensor, peak_dbfs: float = PEAK_DBFS) -> tuple[Tensor, float]:
    """Scale ``wave`` down so its true peak (:func:`true_peak`) is at most ``peak_dbfs`` (quieter audio
    is left as it is).

    Returns the limited wave and the gain applied (1.0 when nothing was changed). Clipping would
    distort, and a clipped track makes the AAC encoder overshoot full scale; a plain gain does not.
    """
    ceiling = 10 ** (peak_dbfs / 20)
    sample_peak = float(wave.abs().max()) if wave.numel() else 0.0
    if not math.isfinite(sample_peak):
        raise ValueError("the generated audio contains NaN or inf")
    peak = true_peak(wave) if sample_peak > 0.5 * ceiling else sample_peak  # true peak <= ~2x the sample peak
    if peak <= ceiling:
        return wave, 1.0
    gain = ceiling / peak
    return wave * gain, gain


MAX_GAIN_DB = 30.0
"""The most :func:`normalize_peak` raises an output: near-silence stays near-silent, not a loud noise bed."""


def normalize_peak(
    wave: Tensor, peak_dbfs: float = PEAK_DBFS, max_gain_db: float = MAX_GAIN_DB
) -> tuple[Tensor, float]:
    """The one loudness policy of what soundvcm writes for a user: every output scaled so its true
    peak (:func:`true_peak`) is at ``peak_dbfs`` (-1 dBTP), up or down, whatever the model or the
    step count made (a 1-step VCM came out ~25 dB quieter than its flow-matching twin), but raised
    by at most ``max_gain_db``. A plain gain, never clipping. Returns (wave, gain)."""
    if not wave.numel():
        return wave, 1.0
    sample_peak = float(wave.abs().max())
    if not math.isfinite(sample_peak):
        raise ValueError("the generated audio contains NaN or inf")
    peak = true_peak(wave)
    if peak <= 0:
        return wave, 1.0
    gain = min(10 ** (peak_dbfs / 20) / peak, 10 ** (max_gain_db / 20))
    return wave * gain, gain


def write_audio(path: str | Path, wave: Tensor | np.ndarray, sample_rate: int) -> Path:
    """Write mono ``(samples,)`` or ``(channels, samples)`` audio as flac or wav, atomically."""
    path = Path(path)
    fmt = {".flac": "FLAC", ".wav": "WAV"}.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unsupported audio suffix (use .flac or .wav)")
    data = torch.as_tensor(wave).detach().float().cpu().clamp(-1, 1).numpy()
    data = data.T if data.ndim == 2 else data
    try:
        atomic_write(path, lambda tmp: sf.write(str(tmp), data, sample_rate, format=fmt, subtype="PCM_16"))
    except sf.SoundFileError as exc:  # libsndfile's own type; a full disk reads "System error."
        free = shutil.disk_usage(path.parent).free
        cause = f"{free / 1e6:.1f} MB free on its disk" if free < 64e6 else str(exc).strip()
        raise OSError(f"{path}: could not be written ({cause})") from exc
    return path
