"""MMAudio's 1-D mel VAE (``v1-16.pth``: 80 mels -> 20 channels; ``v1-44.pth``: 128 -> 40), our own module.

Magnitude-preserving layers after EDM2 (Karras et al. 2024): every convolution's weight is
normalised per output channel (w / (|w| + 1e-4 sqrt-scaled) / sqrt(fan-in)) -- done once at load,
as "removing weight norm" -- SiLU is divided by 0.596, and residual sums are
``lerp(x, h, 0.3) / sqrt(0.7^2 + 0.3^2)``. Channels (hidden, 2 hidden, 4 hidden), two residual
blocks per level (three in the decoder), single-head attention with normalised q/k/v at the last
level and in the middle, one 2x time down/upsampling after the first level, activations clamped
to +-256. The encoder gives (mean, logvar) with logvar clamped to [-30, 20]; mels are normalised
with fixed per-band statistics stored in the file. Tensors are (B, channels, time).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from soundvcm.weights import RELEASES, WeightFile, module_shapes

CLIP_ACT = 256.0


def normalize(x: Tensor, dim, eps: float = 1e-4) -> Tensor:
    """x / (eps + |x| * sqrt(norm.numel() / x.numel())) over ``dim``: unit RMS magnitude."""
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True, dtype=torch.float32)
    norm = eps + norm * math.sqrt(norm.numel() / x.numel())
    return x / norm.to(x.dtype)


def mp_silu(x: Tensor) -> Tensor:
    return F.silu(x) / 0.596


def mp_sum(a: Tensor, b: Tensor, t: float = 0.3) -> Tensor:
    return a.lerp(b, t) / math.sqrt((1 - t) ** 2 + t**2)


class MPConv1d(nn.Module):
    """Weight-only 1-D convolution ('same' padding). While training, the weight is normalised in
    every forward (EDM2's magnitude-preserving layer, with :meth:`renormalize` keeping the stored
    weight at unit norm after each step); ``prepare()`` folds that normalisation into the stored
    weight once, for inference (an official file's weights are stored unnormalised)."""

    def __init__(self, cin: int, cout: int, kernel: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel))
        self.folded = False

    def _normalized(self) -> Tensor:
        w = normalize(self.weight.float(), dim=(1, 2))
        return w / math.sqrt(w[0].numel())

    def prepare(self) -> None:
        with torch.no_grad():
            self.weight.copy_(self._normalized())
        self.folded = True

    @torch.no_grad()
    def renormalize(self) -> None:
        """EDM2's forced weight normalisation of the stored (unfolded) weight, after an optimizer step."""
        self.weight.copy_(normalize(self.weight.float(), dim=(1, 2)))

    def forward(self, x: Tensor, gain: Tensor | float = 1.0) -> Tensor:
        w = (self.weight if self.folded else self._normalized()) * gain
        return F.conv1d(x, w.to(x.dtype), padding=w.shape[-1] // 2)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int = 3):
        super().__init__()
        self.conv1 = MPConv1d(cin, cout, kernel)
        self.conv2 = MPConv1d(cout, cout, kernel)
        if cin != cout:
            self.nin_shortcut = MPConv1d(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = normalize(x, dim=1)  # pixel norm
        h = self.conv2(mp_silu(self.conv1(mp_silu(x))))
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return mp_sum(x, h)


class Attention(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.qkv = MPConv1d(channels, 3 * channels, 1)
        self.proj_out = MPConv1d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, n = x.shape
        q, k, v = normalize(self.qkv(x).view(b, 1, c, 3, n), dim=2).unbind(3)  # (B, 1, C, N) each
        h = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return mp_sum(x, self.proj_out(h.transpose(-1, -2).reshape(b, c, n)))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = MPConv1d(channels, channels, 1)
        self.conv2 = MPConv1d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(F.avg_pool1d(self.conv1(x), 2, 2))


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = MPConv1d(channels, channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest-exact"))


def _level(blocks: list[nn.Module], attn: list[nn.Module]) -> nn.Module:
    level = nn.Module()
    level.block = nn.ModuleList(blocks)
    level.attn = nn.ModuleList(attn)
    return level


def _middle(ch: int) -> nn.Module:
    mid = nn.Module()
    mid.block_1, mid.attn_1, mid.block_2 = ResBlock(ch, ch), Attention(ch), ResBlock(ch, ch)
    return mid


class Encoder(nn.Module):
    def __init__(self, dim: int, in_dim: int, embed_dim: int, mult=(1, 2, 4), blocks: int = 2, attn=(3,), down=(0,)):
        super().__init__()
        self.blocks, self.attn_levels, self.down_levels = blocks, attn, down
        self.conv_in = MPConv1d(in_dim, dim, 3)
        self.down = nn.ModuleList()
        ch = dim
        for i, m in enumerate(mult):
            out = dim * m
            level = _level(
                [ResBlock(ch if j == 0 else out, out) for j in range(blocks)],
                [Attention(out) for _ in range(blocks)] if i in attn else [],
            )
            if i in down:
                level.downsample = Downsample(out)
            self.down.append(level)
            ch = out
        self.mid = _middle(ch)
        self.conv_out = MPConv1d(ch, 2 * embed_dim, 3)
        self.learnable_gain = nn.Parameter(torch.zeros([]))

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for i, level in enumerate(self.down):
            for j in range(self.blocks):
                h = level.block[j](h)
                if len(level.attn):
                    h = level.attn[j](h)
                h = h.clamp(-CLIP_ACT, CLIP_ACT)
            if i in self.down_levels:
                h = level.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h))).clamp(-CLIP_ACT, CLIP_ACT)
        return self.conv_out(mp_silu(h), gain=self.learnable_gain + 1)


class Decoder(nn.Module):
    def __init__(self, dim: int, out_dim: int, embed_dim: int, mult=(1, 2, 4), blocks: int = 2, attn=(3,), down=(0,)):
        super().__init__()
        self.blocks = blocks + 1
        self.up_levels = tuple(i + 1 for i in down)
        ch = dim * mult[-1]
        self.conv_in = MPConv1d(embed_dim, ch, 3)
        self.mid = _middle(ch)
        levels = []
        for i in reversed(range(len(mult))):
            out = dim * mult[i]
            level = _level(
                [ResBlock(ch if j == 0 else out, out) for j in range(self.blocks)],
                [Attention(out) for _ in range(self.blocks)] if i in attn else [],
            )
            if i in self.up_levels:
                level.upsample = Upsample(out)
            levels.insert(0, level)
            ch = out
        self.up = nn.ModuleList(levels)
        self.conv_out = MPConv1d(ch, out_dim, 3)
        self.learnable_gain = nn.Parameter(torch.zeros([]))

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z)))).clamp(-CLIP_ACT, CLIP_ACT)
        for i in reversed(range(len(self.up))):
            level = self.up[i]
            for j in range(self.blocks):
                h = level.block[j](h)
                if len(level.attn):
                    h = level.attn[j](h)
                h = h.clamp(-CLIP_ACT, CLIP_ACT)
            if i in self.up_levels:
                h = level.upsample(h)
        return self.conv_out(mp_silu(h), gain=self.learnable_gain + 1)


VAE_CONFIGS = {
    "16k": dict(data_dim=80, embed_dim=20, hidden=384),
    "44k": dict(data_dim=128, embed_dim=40, hidden=512),
    # the lite3 set's own (issue 33): HiFi-GAN's 80-band log-mel at 22.05 kHz, trained here on the open data
    "lite": dict(data_dim=80, embed_dim=20, hidden=64),
}


class MelVAE(nn.Module):
    """``encode(mel) -> (mean, std)`` and ``decode(z) -> mel``, all (B, channels, time)."""

    def __init__(self, data_dim: int = 80, embed_dim: int = 20, hidden: int = 384):
        super().__init__()
        self.register_buffer("data_mean", torch.zeros(1, data_dim, 1))
        self.register_buffer("data_std", torch.ones(1, data_dim, 1))
        self.encoder = Encoder(hidden, data_dim, embed_dim)
        self.decoder = Decoder(hidden, data_dim, embed_dim)
        self.embed_dim = embed_dim
        self.prepared = False

    @classmethod
    def from_config(cls, name: str) -> MelVAE:
        return cls(**VAE_CONFIGS[name])

    def load_official(self, state: dict[str, Tensor], what: str = "mel VAE") -> MelVAE:
        """Strictly load an official ``v1-16.pth`` / ``v1-44.pth`` state dict, then :meth:`prepare`."""
        from soundvcm.weights import load_strict

        self.prepared = False
        load_strict(self, state, what)
        return self.prepare()

    def prepare(self) -> MelVAE:
        """Fold the forced weight normalisation into the weights (once, after loading or training)."""
        if not self.prepared:
            for m in self.modules():
                if isinstance(m, MPConv1d):
                    m.prepare()
            self.prepared = True
        return self

    def posterior(self, mel: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, logvar) of the latent, (B, embed, frames / 2), for training (weights unfolded)."""
        moments = self.encoder((mel - self.data_mean) / self.data_std)
        mean, logvar = moments.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def reconstruct(self, z: Tensor) -> Tensor:
        """The decoder in the data's units, for training (weights unfolded)."""
        return self.decoder(z) * self.data_std + self.data_mean

    def _check(self) -> None:
        if not self.prepared:
            raise RuntimeError("call prepare() after loading weights and before inference")

    def encode(self, mel: Tensor) -> tuple[Tensor, Tensor]:
        self._check()
        moments = self.encoder((mel - self.data_mean) / self.data_std)
        mean, logvar = moments.chunk(2, dim=1)
        return mean, torch.exp(0.5 * logvar.clamp(-30.0, 20.0))

    def decode(self, z: Tensor) -> Tensor:
        self._check()
        return self.decoder(z) * self.data_std + self.data_mean


VAE_WEIGHTS = {
    "16k": WeightFile(
        "vae_16k",
        "v1-16.pth",
        f"{RELEASES}/v1-16.pth",
        "69f56803f59a549a1a507c93859fd4d7",
        "1-D mel VAE, 16 kHz (80 mels -> 20 channels)",
        shapes=lambda: module_shapes(MelVAE.from_config("16k")),
    ),
    "44k": WeightFile(
        "vae_44k",
        "v1-44.pth",
        f"{RELEASES}/v1-44.pth",
        "fab020275fa44c6589820ce025191600",
        "1-D mel VAE, 44.1 kHz (128 mels -> 40 channels)",
        shapes=lambda: module_shapes(MelVAE.from_config("44k")),
    ),
}
