"""Building blocks of the multimodal transformer (§3.5.1, supplement B.3).

Parameter names follow MMAudio's checkpoints (``w1``/``w2``/``w3``, ``qkv``, ``q_norm`` ...)
so released weights load strictly; the code is our own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def swiglu_hidden(dim: int, ratio: float = 4.0, multiple_of: int = 256) -> int:
    """SwiGLU width: 2/3 of ``ratio * dim``, rounded up to a multiple of 256 (1792 -> 1280)."""
    hidden = int(2 * int(dim * ratio) / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


class ChannelLastConv1d(nn.Conv1d):
    """Conv1d over (B, N, C) tensors: time is dim 1, channels last."""

    def forward(self, x: Tensor) -> Tensor:  # (B, N, C_in) -> (B, N, C_out)
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class SwiGLU(nn.Module):
    """w2(silu(w1 x) * w3 x) without biases; ``kernel_size > 1`` makes it a ConvMLP over time."""

    def __init__(self, dim: int, ratio: float = 4.0, kernel_size: int = 1):
        super().__init__()
        hidden = swiglu_hidden(dim, ratio)
        self.w1: nn.Module
        self.w2: nn.Module
        self.w3: nn.Module
        if kernel_size == 1:
            self.w1 = nn.Linear(dim, hidden, bias=False)
            self.w2 = nn.Linear(hidden, dim, bias=False)
            self.w3 = nn.Linear(dim, hidden, bias=False)
        else:
            pad = kernel_size // 2
            self.w1 = ChannelLastConv1d(dim, hidden, kernel_size, padding=pad, bias=False)
            self.w2 = ChannelLastConv1d(hidden, dim, kernel_size, padding=pad, bias=False)
            self.w3 = ChannelLastConv1d(dim, hidden, kernel_size, padding=pad, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def rope_rotations(length: int, head_dim: int, theta: float = 1e4, freq_scaling: float = 1.0) -> Tensor:
    """(1, N, head_dim/2, 2) cos/sin of RoPE angles pos * freq_i * scaling, in fp32.

    ``freq_scaling = latent_len / clip_len`` puts CLIP tokens on the latent timeline.
    """
    # the same float32 operations, in the same order, as MMAudio's table: converted networks are
    # bitwise equal to MMAudio's in fp32 (issue 10)
    freqs = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    freqs = freqs * freq_scaling
    angles = torch.arange(length, dtype=torch.float32)[:, None] * freqs[None]  # (N, hd/2)
    return torch.stack([angles.cos(), angles.sin()], dim=-1)[None]


def apply_rope(x: Tensor, rot: Tensor) -> Tensor:
    """Rotate consecutive pairs of x (B, H, N, hd) by the angles in rot (1, N, hd/2, 2), in fp32
    at least (bf16 activations are rotated in fp32, as MMAudio does)."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    xf = x.to(dtype).unflatten(-1, (-1, 2))  # (B, H, N, hd/2, 2)
    cos, sin = rot[..., 0].to(dtype), rot[..., 1].to(dtype)
    out = torch.stack([cos * xf[..., 0] - sin * xf[..., 1], sin * xf[..., 0] + cos * xf[..., 1]], dim=-1)
    return out.flatten(-2).to(x.dtype)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: x (1 + scale) + shift."""
    return x * (1 + scale) + shift


def attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """SDPA over (B, H, N, hd) -> (B, N, H*hd)."""
    out = F.scaled_dot_product_attention(q.contiguous(), k.contiguous(), v.contiguous())
    return out.transpose(1, 2).flatten(2)


def _norm_wide(norm: nn.Module, x: Tensor) -> Tensor:
    """``norm(x)`` computed in fp32 when ``x`` is bf16/fp16 (autocast leaves norms to the input's
    dtype, and the fused RMSNorm kernel needs the weight's); other dtypes pass through unchanged."""
    if x.dtype in (torch.bfloat16, torch.float16):
        return norm(x.float()).to(x.dtype)
    return norm(x)


class SelfAttentionProjection(nn.Module):
    """qkv projection with per-head RMSNorm on q and k and optional RoPE (attention runs outside)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.RMSNorm(self.head_dim)
        self.k_norm = nn.RMSNorm(self.head_dim)

    def forward(self, x: Tensor, rot: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        b, n, _ = x.shape
        # MMAudio interleaves q, k, v innermost: channel = (head, head_dim, qkv)
        qkv = self.qkv(x).view(b, n, self.num_heads, self.head_dim, 3).permute(4, 0, 2, 1, 3)  # (3, B, H, N, hd)
        q, k, v = _norm_wide(self.q_norm, qkv[0]), _norm_wide(self.k_norm, qkv[1]), qkv[2]
        if rot is not None:
            q, k = apply_rope(q, rot), apply_rope(k, rot)
        return q, k, v


class StreamBlock(nn.Module):
    """One stream of a transformer block: adaLN, attention projections, then (unless
    ``pre_only``) the attention output projection and a SwiGLU feed-forward, each gated."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, kernel_size: int = 3, pre_only: bool = False):
        super().__init__()
        self.pre_only = pre_only
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.attn = SelfAttentionProjection(dim, num_heads)
        n_mod = 2 if pre_only else 6
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, n_mod * dim))
        if not pre_only:
            self.linear1: nn.Module
            if kernel_size == 1:
                self.linear1 = nn.Linear(dim, dim)
            else:
                self.linear1 = ChannelLastConv1d(dim, dim, kernel_size, padding=kernel_size // 2)
            self.norm2 = nn.LayerNorm(dim, elementwise_affine=False)
            self.ffn = SwiGLU(dim, mlp_ratio, kernel_size)

    def pre_attention(self, x: Tensor, c: Tensor, rot: Tensor | None):
        mods = self.adaLN_modulation(c).chunk(2 if self.pre_only else 6, dim=-1)
        qkv = self.attn(modulate(self.norm1(x), mods[0], mods[1]), rot)
        return qkv, mods[2:]

    def post_attention(self, x: Tensor, attn_out: Tensor, mods) -> Tensor:
        if self.pre_only:
            return x
        gate_attn, shift_ffn, scale_ffn, gate_ffn = mods
        x = x + self.linear1(attn_out) * gate_attn
        return x + self.ffn(modulate(self.norm2(x), shift_ffn, scale_ffn)) * gate_ffn

    def forward(self, x: Tensor, c: Tensor, rot: Tensor | None) -> Tensor:
        """A single-stream (audio-only, "fused") block."""
        qkv, mods = self.pre_attention(x, c, rot)
        return self.post_attention(x, attention(*qkv), mods)


class JointBlock(nn.Module):
    """Joint attention over [latent || clip || text]; latent modulated by the frame-aligned
    condition, clip and text by the global one (B.1)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, pre_only: bool = False):
        super().__init__()
        self.pre_only = pre_only
        self.latent_block = StreamBlock(dim, num_heads, mlp_ratio, kernel_size=3)
        self.clip_block = StreamBlock(dim, num_heads, mlp_ratio, kernel_size=3, pre_only=pre_only)
        self.text_block = StreamBlock(dim, num_heads, mlp_ratio, kernel_size=1, pre_only=pre_only)

    def forward(self, latent, clip, text, global_c, extended_c, latent_rot, clip_rot):
        lq, lmod = self.latent_block.pre_attention(latent, extended_c, latent_rot)
        cq, cmod = self.clip_block.pre_attention(clip, global_c, clip_rot)
        tq, tmod = self.text_block.pre_attention(text, global_c, None)
        n_lat, n_clip = latent.shape[1], clip.shape[1]
        out = attention(*(torch.cat([a, b, c], dim=2) for a, b, c in zip(lq, cq, tq)))  # (B, N_all, D)
        latent = self.latent_block.post_attention(latent, out[:, :n_lat], lmod)
        if not self.pre_only:
            clip = self.clip_block.post_attention(clip, out[:, n_lat : n_lat + n_clip], cmod)
            text = self.text_block.post_attention(text, out[:, n_lat + n_clip :], tmod)
        return latent, clip, text


class FinalBlock(nn.Module):
    """adaLN (shift, scale), LayerNorm, Conv1d(D -> latent_dim, k=7)."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.conv = ChannelLastConv1d(dim, out_dim, kernel_size=7, padding=3)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.conv(modulate(self.norm(x), shift, scale))
