"""PaSST-S (``passt_s_swa_p16_128_ap476``) for av-benchmark's FD-PASST and KL-PASST-softmax, our own module.

Front end (hear21passt's ``AugmentMelSTFT`` in evaluation mode): audio at 32 kHz, padded or cut
to 10 s; pre-emphasis y[n] = x[n+1] - 0.97 x[n]; STFT with n_fft 1024, a symmetric Hann window of
800, hop 320, centred reflect padding; power; 128 Kaldi mel bands (1127 ln(1 + f/700), triangles
in the mel domain over the bins' frequencies, no normalisation) from 0 to 15 kHz, with a zero
column for the Nyquist bin; log(x + 1e-5); (x + 4.5) / 5.

Network: a ViT (width 768, 12 blocks, 12 heads, LayerNorm eps 1e-6) over 16 x 16 patches with
stride 10 (12 x 99 for 10 s), separate frequency and time position embeddings, class and
distillation tokens: features = (cls + dist) / 2 (768-d, FD-PASST) and logits = head(features)
(527 AudioSet classes, KL-PASST-softmax). Weights: ``passt-s-f128-p16-s10-ap.476-swa.pt``
(registry name ``passt``), loaded strictly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from soundvcm.encoders.base import freeze
from soundvcm.media.mel import kaldi_mel_banks
from soundvcm.weights import WeightFile, load_strict, load_weights, module_shapes

SAMPLE_RATE, SECONDS = 32_000, 10.0
N_FFT, WIN, HOP, MELS, FMAX = 1024, 800, 320, 128, 15_000.0


def log_mel(wave: Tensor) -> Tensor:
    """(B, samples) at 32 kHz -> (B, 128, frames)."""
    x = F.conv1d(wave[:, None], torch.tensor([[[-0.97, 1.0]]], device=wave.device))[:, 0]
    spec = torch.stft(
        x,
        N_FFT,
        hop_length=HOP,
        win_length=WIN,
        window=torch.hann_window(WIN, periodic=False, device=wave.device),
        center=True,
        return_complex=True,
    )
    power = spec.real.square() + spec.imag.square()
    mel = torch.log(kaldi_mel_banks(MELS, N_FFT, SAMPLE_RATE, 0.0, FMAX).to(wave.device) @ power + 1e-5)
    return (mel + 4.5) / 5.0


class Block(nn.Module):
    def __init__(self, d: int = 768, heads: int = 12):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d, eps=1e-6)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(d, 3 * d)
        self.attn.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d, eps=1e-6)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(d, 4 * d)
        self.mlp.fc2 = nn.Linear(4 * d, d)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.attn.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + self.attn.proj(y)
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))


class PaSST(nn.Module):
    def __init__(
        self, d: int = 768, depth: int = 12, classes: int = 527, fdim: int = 128, tdim: int = 998, stride: int = 10
    ):
        super().__init__()
        grid = (fdim // stride, tdim // stride)
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(1, d, 16, stride=stride)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, d))
        self.new_pos_embed = nn.Parameter(torch.zeros(1, 2, d))
        self.freq_new_pos_embed = nn.Parameter(torch.zeros(1, d, grid[0], 1))
        self.time_new_pos_embed = nn.Parameter(torch.zeros(1, d, 1, grid[1]))
        self.blocks = nn.Sequential(*[Block(d) for _ in range(depth)])
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, classes))
        self.head_dist = nn.Linear(d, classes)

    def forward(self, spec: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 1, 128, frames) -> (527 logits, 768-d features)."""
        x = self.patch_embed.proj(spec)
        x = x + self.time_new_pos_embed[..., : x.shape[-1]] + self.freq_new_pos_embed
        x = x.flatten(2).transpose(1, 2)
        b = x.shape[0]
        cls = self.cls_token.expand(b, -1, -1) + self.new_pos_embed[:, :1]
        dist = self.dist_token.expand(b, -1, -1) + self.new_pos_embed[:, 1:]
        x = self.norm(self.blocks(torch.cat([cls, dist, x], dim=1)))
        features = (x[:, 0] + x[:, 1]) / 2
        return self.head(features), features


@torch.inference_mode()
def embed_clip(net: PaSST, wave: Tensor) -> tuple[Tensor, Tensor]:
    """(samples,) at 32 kHz -> (768 features, 527 logits); padded or cut to 10 s as av-benchmark does."""
    n = int(SAMPLE_RATE * SECONDS)
    wave = F.pad(wave, (0, max(0, n - wave.numel())))[:n]
    logits, features = net(log_mel(wave[None].to(next(net.parameters()).device))[:, None])
    return features[0].cpu(), logits[0].cpu()


def load_passt(path) -> PaSST:
    net = PaSST()
    load_strict(net, load_weights(path, "PaSST"), "PaSST")
    return freeze(net)


__all__ = ["PaSST", "embed_clip", "load_passt", "log_mel"]


PASST_WEIGHTS = WeightFile(
    "passt",
    "passt-s-f128-p16-s10-ap.476-swa.pt",
    "https://github.com/kkoutini/PaSST/releases/download/v0.0.1-audioset/passt-s-f128-p16-s10-ap.476-swa.pt",
    None,
    "PaSST-S, 32 kHz, 10 s (FD-PASST, KL-PASST-softmax)",
    shapes=lambda: module_shapes(PaSST()),
)
