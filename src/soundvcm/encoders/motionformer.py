"""Synchformer's visual feature extractor (MotionFormer, divided space-time attention), our own module.

A 16-frame 224 x 224 segment (normalised with mean = std = 0.5) becomes 8 x 14 x 14 tubelet
tokens (2 frames x 16 x 16 pixels each) plus a class token, with a spatial position embedding
tiled over time plus a temporal embedding. Each of the 12 blocks (width 768, 12 heads) runs
time attention (each patch position across the 8 time steps, the class token attending to
all), then space attention (each time step's 196 patches), then a GELU MLP, all pre-LayerNorm
(eps 1e-6). The patch tokens are normalised, and a spatial aggregation layer (a pre-norm
transformer encoder layer with its own class token) pools each time step's 196 patches into
one vector: 8 tokens x 768 per segment. Segments of a clip are 16 frames with a step of 8.

Weights: the ``vfeat_extractor.*`` entries of ``synchformer_state_dict.pth`` (registry name
``synchformer``), keys as in MMAudio's ``MotionFormer``; the unused 2-D ``patch_embed`` is kept
so that the file loads strictly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from soundvcm.encoders.layers import PackedAttention
from soundvcm.weights import RELEASES, WeightFile

SYNC_MEAN = (0.5, 0.5, 0.5)
SYNC_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class MotionFormerConfig:
    dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: int = 4
    image_size: int = 224
    patch: int = 16
    tubelet: int = 2
    frames: int = 16

    @property
    def grid(self) -> int:
        return self.image_size // self.patch

    @property
    def time_steps(self) -> int:
        return self.frames // self.tubelet


class DividedAttention(nn.Module):
    """Attention within groups (all frames of one patch, or all patches of one frame); the
    class token attends to every token and is attended to by every group."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, frames: int, over_time: bool) -> Tensor:
        b, n, d = x.shape
        h, patches = self.heads, (n - 1) // frames
        q, k, v = self.qkv(x).view(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)  # (B, H, N, dh) each
        cls_out = F.scaled_dot_product_attention(q[:, :, :1], k, v)  # (B, H, 1, dh)

        def group(t: Tensor) -> Tensor:  # (B, H, F*P, dh) -> (B*G, H, L, dh)
            t = t.reshape(b, h, frames, patches, -1)
            t = t.permute(0, 3, 1, 2, 4) if over_time else t.permute(0, 2, 1, 3, 4)
            return t.reshape(-1, h, t.shape[3], t.shape[4])

        groups = patches if over_time else frames
        qg, kg, vg = group(q[:, :, 1:]), group(k[:, :, 1:]), group(v[:, :, 1:])
        kc = k[:, :, :1].repeat_interleave(groups, dim=0)
        vc = v[:, :, :1].repeat_interleave(groups, dim=0)
        out = F.scaled_dot_product_attention(qg, torch.cat([kc, kg], 2), torch.cat([vc, vg], 2))
        out = out.reshape(b, groups, h, -1, d // h)  # (B, G, H, L, dh)
        out = out.permute(0, 2, 3, 1, 4) if over_time else out.permute(0, 2, 1, 3, 4)  # (B, H, F, P, dh)
        out = torch.cat([cls_out, out.reshape(b, h, frames * patches, -1)], dim=2)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = DividedAttention(dim, heads)
        self.timeattn = DividedAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, dim * mlp_ratio)
        self.norm3 = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: Tensor, frames: int) -> Tensor:
        x = x + self.timeattn(self.norm3(x), frames, over_time=True)
        x = x + self.attn(self.norm1(x), frames, over_time=False)
        return x + self.mlp(self.norm2(x))


class SpatialAggregation(nn.Module):
    """A pre-norm transformer encoder layer over [cls, patches]; returns the class token."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.self_attn = PackedAttention(dim, heads)
        self.linear1 = nn.Linear(dim, dim * mlp_ratio)
        self.linear2 = nn.Linear(dim * mlp_ratio, dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.self_attn(self.norm1(x))
        x = x + self.linear2(F.gelu(self.linear1(self.norm2(x))))
        return x[:, 0]


class MotionFormer(nn.Module):
    def __init__(self, config: MotionFormerConfig = MotionFormerConfig()):
        super().__init__()
        c = self.config = config
        self.patch_embed = nn.Module()  # unused 2-D embedding, kept for strict loading
        self.patch_embed.proj = nn.Conv2d(3, c.dim, c.patch, stride=c.patch)
        self.patch_embed_3d = nn.Module()
        self.patch_embed_3d.proj = nn.Conv3d(
            3, c.dim, (c.tubelet, c.patch, c.patch), stride=(c.tubelet, c.patch, c.patch)
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, c.grid**2 + 1, c.dim))
        self.temp_embed = nn.Parameter(torch.zeros(1, c.time_steps, c.dim))
        self.blocks = nn.ModuleList(Block(c.dim, c.heads, c.mlp_ratio) for _ in range(c.depth))
        self.norm = nn.LayerNorm(c.dim, eps=1e-6)
        self.spatial_attn_agg = SpatialAggregation(c.dim, c.heads, c.mlp_ratio)

    def forward(self, segments: Tensor) -> Tensor:
        """(N, 3, 16, H, W) normalised segments -> (N, 8, dim): one vector per 2-frame time step."""
        c = self.config
        x = self.patch_embed_3d.proj(segments).flatten(2).transpose(1, 2)  # (N, T*P, D), time-major
        n, patches = x.shape[0], c.grid**2
        pos = self.pos_embed[:, 1:].repeat(1, c.time_steps, 1) + self.temp_embed.repeat_interleave(patches, 1)
        x = torch.cat([self.cls_token.expand(n, -1, -1) + self.pos_embed[:, :1], x + pos], dim=1)
        for block in self.blocks:
            x = block(x, c.time_steps)
        x = self.norm(x[:, 1:])  # (N, T*P, D)
        x = x.reshape(n * c.time_steps, patches, c.dim)
        return self.spatial_attn_agg(x).view(n, c.time_steps, c.dim)


def sync_segments(frames: Tensor, segment: int = 16, step: int = 8) -> Tensor:
    """(B, T, C, H, W) -> (B, S, C, segment, H, W) with S = (T - segment) // step + 1."""
    t = frames.shape[1]
    count = (t - segment) // step + 1
    if count < 1:
        raise ValueError(f"sync features need at least {segment} frames, got {t}")
    segs = torch.stack([frames[:, i * step : i * step + segment] for i in range(count)], dim=1)
    return segs.transpose(2, 3)


SYNCHFORMER_FILE = WeightFile(
    "synchformer",
    "synchformer_state_dict.pth",
    f"{RELEASES}/synchformer_state_dict.pth",
    "5b2f5594b0730f70e41e549b7c94390c",
    "Synchformer (its MotionFormer visual extractor is used)",
)
"""The whole Synchformer's file; its expected keys are declared with the model in
:mod:`soundvcm.evaluation.synchformer` (the encoder set uses only ``vfeat_extractor.``)."""
