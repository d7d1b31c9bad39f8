"""BigVGAN vocoders, our own module: MMAudio's 16 kHz generator (Make-An-Audio 2, ``best_netG.pt``)
and NVIDIA's BigVGAN-v2 44.1 kHz / 128-band / 512x generator.

Mel (B, mels, frames) -> waveform (B, frames * hop). Like HiFi-GAN, transposed-convolution
upsampling followed by the mean of three residual blocks (kernels 3, 7, 11; dilations 1, 3, 5),
but every activation is *anti-aliased SnakeBeta*: upsample 2x with a Kaiser-windowed sinc
(12 taps, cutoff 0.25, half-width 0.3, replicate padding), x + sin^2(alpha x) / beta with
log-scale alpha, beta per channel, then low-pass and downsample 2x with the same filter. No
activation before the upsampling convolutions. The 44.1 kHz v2 generator has no bias and no
tanh at the end (it clamps to [-1, 1]).

Checkpoints store weight-normalised convolutions, either as ``weight_g``/``weight_v`` or as
``parametrizations.weight.original0/1``; both are folded into plain weights at load, after the
key set is checked against the expected one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from soundvcm.weights import RELEASES, WeightFile, fold_weight_norm, module_shapes


@dataclass(frozen=True)
class BigVGANConfig:
    num_mels: int
    upsample_rates: tuple[int, ...]
    upsample_kernels: tuple[int, ...]
    channels: int
    final_bias: bool = True
    final_tanh: bool = True
    resblock_kernels: tuple[int, ...] = (3, 7, 11)
    dilations: tuple[int, ...] = (1, 3, 5)

    @property
    def hop(self) -> int:
        return math.prod(self.upsample_rates)


BIGVGAN_CONFIGS = {
    # mmaudio/ext/bigvgan/bigvgan_vocoder.yml (16 kHz, 80 mels, hop 256)
    "16k": BigVGANConfig(80, (4, 4, 2, 2, 2, 2), (8, 8, 4, 4, 4, 4), 1536),
    # nvidia/bigvgan_v2_44khz_128band_512x config.json (44.1 kHz, 128 mels, hop 512)
    "44k": BigVGANConfig(128, (8, 4, 2, 2, 2, 2), (16, 8, 4, 4, 4, 4), 1536, final_bias=False, final_tanh=False),
}


def kaiser_sinc(cutoff: float, half_width: float, size: int) -> Tensor:
    """A (1, 1, size) Kaiser-windowed sinc low-pass with unit DC gain (even size: half-sample centred)."""
    half = size // 2
    attenuation = 2.285 * (half - 1) * math.pi * 4 * half_width + 7.95
    if attenuation > 50:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation >= 21:
        beta = 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21)
    else:
        beta = 0.0
    window = torch.kaiser_window(size, periodic=False, beta=beta)
    time = torch.arange(-half, half) + 0.5 if size % 2 == 0 else torch.arange(size) - half
    taps = 2 * cutoff * window * torch.sinc(2 * cutoff * time)
    return (taps / taps.sum()).view(1, 1, size)


class UpSample(nn.Module):
    def __init__(self, ratio: int = 2, size: int = 12):
        super().__init__()
        self.ratio, self.pad = ratio, size // ratio - 1
        self.crop_left = self.pad * ratio + (size - ratio) // 2
        self.crop_right = self.pad * ratio + (size - ratio + 1) // 2
        self.register_buffer("filter", kaiser_sinc(0.5 / ratio, 0.6 / ratio, size))

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        x = F.pad(x, (self.pad, self.pad), mode="replicate")
        x = self.ratio * F.conv_transpose1d(x, self.filter.expand(c, -1, -1), stride=self.ratio, groups=c)
        return x[..., self.crop_left : -self.crop_right]


class LowPass(nn.Module):
    def __init__(self, ratio: int = 2, size: int = 12):
        super().__init__()
        self.stride, self.pad = ratio, (size // 2 - 1, size // 2)
        self.register_buffer("filter", kaiser_sinc(0.5 / ratio, 0.6 / ratio, size))

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        x = F.pad(x, self.pad, mode="replicate")
        return F.conv1d(x, self.filter.expand(c, -1, -1), stride=self.stride, groups=c)


class DownSample(nn.Module):
    def __init__(self, ratio: int = 2, size: int = 12):
        super().__init__()
        self.lowpass = LowPass(ratio, size)

    def forward(self, x: Tensor) -> Tensor:
        return self.lowpass(x)


class SnakeBeta(nn.Module):
    """x + sin^2(exp(alpha) x) / (exp(beta) + 1e-9), per channel (log-scale parameters)."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        alpha = self.alpha.exp()[None, :, None]
        beta = self.beta.exp()[None, :, None]
        return x + torch.sin(x * alpha).pow(2) / (beta + 1e-9)


class AntiAliased(nn.Module):
    """Upsample 2x, SnakeBeta, downsample 2x (MMAudio's ``Activation1d``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.act = SnakeBeta(channels)
        self.upsample = UpSample()
        self.downsample = DownSample()

    def forward(self, x: Tensor) -> Tensor:
        return self.downsample(self.act(self.upsample(x)))


class AMPBlock(nn.Module):
    def __init__(self, ch: int, kernel: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs1 = nn.ModuleList(
            nn.Conv1d(ch, ch, kernel, dilation=d, padding=(kernel * d - d) // 2) for d in dilations
        )
        self.convs2 = nn.ModuleList(nn.Conv1d(ch, ch, kernel, padding=(kernel - 1) // 2) for _ in dilations)
        self.activations = nn.ModuleList(AntiAliased(ch) for _ in range(2 * len(dilations)))

    def forward(self, x: Tensor) -> Tensor:
        for i, (c1, c2) in enumerate(zip(self.convs1, self.convs2)):
            x = x + c2(self.activations[2 * i + 1](c1(self.activations[2 * i](x))))
        return x


class BigVGAN(nn.Module):
    def __init__(self, config: BigVGANConfig):
        super().__init__()
        self.config = config
        c = config.channels
        self.conv_pre = nn.Conv1d(config.num_mels, c, 7, padding=3)
        self.ups = nn.ModuleList(
            nn.ModuleList([nn.ConvTranspose1d(c // 2**i, c // 2 ** (i + 1), k, u, padding=(k - u) // 2)])
            for i, (u, k) in enumerate(zip(config.upsample_rates, config.upsample_kernels))
        )
        self.resblocks = nn.ModuleList(
            AMPBlock(c // 2 ** (i + 1), k, config.dilations)
            for i in range(len(self.ups))
            for k in config.resblock_kernels
        )
        ch = c // 2 ** len(self.ups)
        self.activation_post = AntiAliased(ch)
        self.conv_post = nn.Conv1d(ch, 1, 7, padding=3, bias=config.final_bias)

    def forward(self, mel: Tensor) -> Tensor:
        """(B, mels, frames) -> (B, frames * hop)."""
        x = self.conv_pre(mel)
        k = len(self.config.resblock_kernels)
        for i, up in enumerate(self.ups):
            x = up[0](x)
            x = sum(block(x) for block in self.resblocks[i * k : (i + 1) * k]) / k
        x = self.conv_post(self.activation_post(x))
        x = torch.tanh(x) if self.config.final_tanh else x.clamp(-1, 1)
        return x[:, 0]

    def load_official(self, state: dict[str, Tensor], what: str = "BigVGAN") -> None:
        """Strictly load a generator state dict in either weight-norm format."""
        from soundvcm.weights import load_strict

        load_strict(self, fold_weight_norm(state), what)


BIGVGAN_WEIGHTS = {
    "16k": WeightFile(
        "bigvgan_16k",
        "best_netG.pt",
        f"{RELEASES}/best_netG.pt",
        "eeaf372a38a9c31c362120aba2dde292",
        "BigVGAN vocoder, 16 kHz (Make-An-Audio 2)",
        shapes=lambda: module_shapes(BigVGAN(BIGVGAN_CONFIGS["16k"])),
    ),
    "44k": WeightFile(
        "bigvgan_v2_44k",
        "bigvgan_v2_44khz_128band_512x.pt",
        "https://huggingface.co/nvidia/bigvgan_v2_44khz_128band_512x/resolve/main/bigvgan_generator.pt",
        None,
        "BigVGAN v2 vocoder, 44.1 kHz, 128 bands",
        shapes=lambda: module_shapes(BigVGAN(BIGVGAN_CONFIGS["44k"])),
    ),
}
