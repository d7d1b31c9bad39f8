"""A frame-rate vocoder with an inverse-STFT head (Vocos-style; issue 35), our own module.

Mel (B, 80, frames) -> waveform (B, frames * 256) at 22.05 kHz, the same contract as
:class:`soundvcm.encoders.hifigan.HiFiGAN`, but every layer runs at the mel's frame rate
(86 frames/s) where HiFi-GAN runs its residual blocks at up to 256x that rate:

1. a 1-D convolution (kernel 7) from the 80 mel bands to ``dim`` channels, LayerNorm;
2. ``layers`` ConvNeXt blocks: depthwise convolution (kernel 7), LayerNorm, pointwise MLP
   ``dim -> hidden -> dim`` with GELU, a learnt per-channel scale (initialised to 1 / layers),
   residual;
3. LayerNorm and a linear head giving, per frame, the log-magnitude and the phase of a
   ``n_fft``-point spectrum (513 bins each for n_fft = 1024);
4. inverse FFT, Hann window, overlap-add with hop 256, divided by the summed squared window
   ("same" padding: frame f's window is centred on sample 256 f + 128, where HiFi-GAN's mel
   frame f is centred, so the two vocoders are sample-aligned and one teacher bank serves both).

Multiply-adds per frame at dim 384, hidden 1152, 8 layers: ~7.7 M, i.e. ~0.7 GMAC per second of
audio against HiFi-GAN V1's ~26 (BENCHMARKS.md, issue 35). The head and the inverse STFT always
run in fp32 (CPU FFTs have no bf16 kernel, and exp() of a bf16 log-magnitude would cost ~3 dB
steps); the backbone follows the caller's autocast.

With ``hop`` < 256 (``ISTFTShape``), the backbone's output is upsampled by a transposed convolution
to 256 / hop vectors per mel frame and refined by a few narrow ConvNeXt blocks; the head then gives
one 4-hop spectrum per ``hop`` samples. At hop 256 a click has to be placed inside a 1024-sample
window by the phase slope alone; at hop 64 inside 256 samples (issue 35's design comparison).
The receptive field is :attr:`ISTFTVocoder.receptive_context` frames on each side.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from soundvcm.encoders.base import freeze
from soundvcm.weights import load_export, load_strict


@dataclass(frozen=True)
class ISTFTShape:
    """The student's shape; saved beside its weights (``kind`` tells the loaders which module)."""

    dim: int = 384
    layers: int = 8
    hidden: int = 1152
    n_fft: int = 1024
    kind: str = "istft"
    # hop < 256: the backbone's output is upsampled (a transposed convolution) to 256 / hop vectors
    # per mel frame, refined by fine_layers ConvNeXt blocks of fine_dim channels, and the head gives
    # one n_fft-point spectrum per hop samples (a transient is then placed within hop samples, not 256)
    hop: int = 256
    fine_dim: int = 128
    fine_layers: int = 2

    def __post_init__(self) -> None:
        frame = ISTFTVocoder.hop_length
        if self.hop < 1 or frame % self.hop:  # so 256 / hop is a power of two, and even where it is above 1
            raise ValueError(f"hop must divide the mel frame's {frame} samples, got {self.hop}")
        if self.n_fft < 2 * self.hop or self.n_fft % self.hop:
            # Hann windows overlap-add to a non-zero envelope only from 2 windows per sample on
            raise ValueError(
                f"n_fft must be a multiple of the hop ({self.hop}) and >= {2 * self.hop}, got {self.n_fft}"
            )

    def build(self) -> ISTFTVocoder:
        return ISTFTVocoder(self)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, shape: dict) -> ISTFTShape:
        """The shape an export or a checkpoint recorded (fields added later take their defaults)."""
        names = ("dim", "layers", "hidden", "n_fft", "hop", "fine_dim", "fine_layers")
        return cls(**{k: int(shape[k]) for k in names if k in shape})  # type: ignore[arg-type]


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, hidden: int, scale: float):
        super().__init__()
        self.depthwise = nn.Conv1d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.up = nn.Linear(dim, hidden)
        self.down = nn.Linear(hidden, dim)
        self.scale = nn.Parameter(torch.full((dim,), scale))

    def forward(self, x: Tensor) -> Tensor:
        """(B, dim, frames) -> the same."""
        h = self.depthwise(x).transpose(1, 2)
        h = self.down(F.gelu(self.up(self.norm(h))))
        return x + (self.scale * h).transpose(1, 2)


def overlap_add(frames: Tensor, window: Tensor, hop: int) -> Tensor:
    """Windowed frames (B, n_fft, F) -> (B, F * hop) samples: overlap-add divided by the summed
    squared window, trimmed by (n_fft - hop) / 2 at each end ("same" padding)."""
    n_fft, count = frames.shape[1], frames.shape[2]
    length = (count - 1) * hop + n_fft
    fold = dict(output_size=(1, length), kernel_size=(1, n_fft), stride=(1, hop))
    wave = F.fold(frames, **fold)[:, 0, 0]
    envelope = F.fold((window**2)[None, :, None].expand(1, n_fft, count), **fold)[0, 0, 0]
    pad = (n_fft - hop) // 2
    return wave[:, pad : length - pad] / envelope[pad : length - pad].clamp_min(1e-8)


def analyse(wave: Tensor, window: Tensor, hop: int) -> Tensor:
    """(B, samples) -> (B, n_fft / 2 + 1, samples / hop) complex: the "same"-padded STFT that
    :func:`overlap_add` inverts exactly (frame f's window centred on sample hop f + hop / 2), i.e.
    the spectrum the head would have to give to reproduce ``wave``."""
    n_fft = window.numel()
    pad = (n_fft - hop) // 2
    frames = F.pad(wave, (pad, pad)).unfold(-1, n_fft, hop)  # (B, F, n_fft)
    return torch.fft.rfft(frames * window, dim=-1).transpose(1, 2)


def head_spectrum(h: Tensor, max_log_magnitude: float) -> Tensor:
    """An iSTFT head's output (B, 2 bins, F): log-magnitudes then phases -> (B, bins, F) complex (fp32)."""
    with torch.autocast(h.device.type, enabled=False):
        log_magnitude, phase = h.float().chunk(2, dim=1)
        return torch.polar(log_magnitude.clamp(max=max_log_magnitude).exp(), phase)


def inverse_stft(spec: Tensor, window: Tensor, hop: int) -> Tensor:
    """(B, n_fft / 2 + 1, F) complex -> (B, F * hop): inverse FFT, window, overlap-add, in fp32."""
    with torch.autocast(spec.device.type, enabled=False):
        frames = torch.fft.irfft(spec, n=window.numel(), dim=1) * window[:, None]
        return overlap_add(frames, window, hop)


class ISTFTVocoder(nn.Module):
    sample_rate = 22_050
    hop_length = 256
    n_mels = 80
    bf16_window: int | None = None  # one pass in every precision (HiFi-GAN's bf16 windows: hifigan.py)

    def __init__(self, shape: ISTFTShape | None = None):
        super().__init__()
        self.shape = shape = shape or ISTFTShape()
        self.embed = nn.Conv1d(self.n_mels, shape.dim, 7, padding=3)
        self.norm = nn.LayerNorm(shape.dim, eps=1e-6)
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(shape.dim, shape.hidden, 1 / shape.layers) for _ in range(shape.layers)
        )
        self.final_norm = nn.LayerNorm(shape.dim, eps=1e-6)
        self.rate = self.hop_length // shape.hop  # spectra per mel frame
        width = shape.dim
        self.up: nn.ConvTranspose1d | None = None
        self.fine = nn.ModuleList()
        if self.rate > 1:  # length frames * rate exactly: kernel 2 rate, stride rate, padding rate / 2
            self.up = nn.ConvTranspose1d(shape.dim, shape.fine_dim, 2 * self.rate, self.rate, self.rate // 2)
            self.fine.extend(
                ConvNeXtBlock(shape.fine_dim, 3 * shape.fine_dim, 1 / max(1, shape.fine_layers))
                for _ in range(shape.fine_layers)
            )
            width = shape.fine_dim
        self.head = nn.Linear(width, shape.n_fft + 2)
        self.window: Tensor
        self.register_buffer("window", torch.hann_window(shape.n_fft), persistent=False)
        self.max_log_magnitude = math.log(shape.n_fft / 2)
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def receptive_context(self) -> int:
        """Mel frames on each side that a sample depends on (the module docstring): the embedding's and
        each block's kernel reach 3 frames; the upsampling one more, each fine block 3 fine frames, and
        a sample depends on the n_fft / hop windows around it."""
        fine = 1 + -(-3 * self.shape.fine_layers // self.rate) if self.rate > 1 else 0
        windows = -(-self.shape.n_fft // 2 // self.hop_length) + 1
        return 3 + 3 * self.shape.layers + fine + windows

    @classmethod
    def distilled(cls, stem: str | Path) -> ISTFTVocoder:
        """A student of :mod:`soundvcm.training.vocoder` from ``STEM.safetensors`` + ``STEM.json``."""
        return cls.from_export(*load_export(stem, "vocoder"))

    @classmethod
    def from_export(cls, shape: dict, state: dict[str, Tensor]) -> ISTFTVocoder:
        """The frozen vocoder of a read export (:func:`soundvcm.weights.load_export`)."""
        model = cls(ISTFTShape.from_dict(shape))
        load_strict(model, state, "vocoder")
        return freeze(model)

    def spectrum(self, mel: Tensor) -> Tensor:
        """(B, 80, frames) log-mel -> (B, n_fft / 2 + 1, frames * 256 / hop) complex spectrum (fp32)."""
        x = self.norm(self.embed(mel).transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        x = self.final_norm(x.transpose(1, 2)).transpose(1, 2)
        if self.up is not None:
            x = self.up(x)
            for block in self.fine:
                x = block(x)
        with torch.autocast(x.device.type, enabled=False):
            h = self.head(x.transpose(1, 2).float()).transpose(1, 2)
            # |X| <= sum(w |x|) <= n_fft / 2 for a Hann-windowed frame within full scale: the clamp keeps
            # exp() finite and never binds on a reachable spectrum; cos/sin of an unbounded phase: no
            # wrap-around for the gradient to cross
            return head_spectrum(h, self.max_log_magnitude)

    def forward(self, mel: Tensor) -> Tensor:
        """(B, 80, frames) natural-log mel -> (B, frames * 256) waveform (in [-1, 1] outside training,
        where a clamp would stop the gradient of a sample past full scale)."""
        wave = self.synthesize(self.spectrum(mel))
        return wave if self.training else wave.clamp(-1, 1)

    def synthesize(self, spec: Tensor) -> Tensor:
        """(B, n_fft / 2 + 1, F) complex -> (B, F * hop): inverse FFT, window, overlap-add."""
        return inverse_stft(spec, self.window, self.shape.hop)
