"""Sinusoidal time embeddings (supplement B.2, Eq. 30) and the two-time embedding (§3.5.2).

Frequencies follow MMAudio's ``TimestepEmbedder``: ``freqs_i = (1e4 / max_period) * 1e4^(-2i/F)``
for i < F/2, embedding ``[cos(t f), sin(t f)]`` (cos first), then Linear-SiLU-Linear.
With t in [0, 1] and ``max_period = 1e4`` (the paper's choice, B.2) the frequencies span
[1e-4, 1], a smooth embedding that lets a one-step sampler extrapolate near t = 1.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn


def sinusoidal_frequencies(freq_dim: int, max_period: float) -> Tensor:
    """The F/2 angular frequencies of Eq. 30, MMAudio's parameterisation."""
    if freq_dim % 2:
        raise ValueError(f"freq_dim must be even, got {freq_dim}")
    # 1 / 1e4^(2i/F), scaled by 1e4 / max_period: the float32 operations of MMAudio's table, in
    # its order, so converted networks are bitwise equal to MMAudio's in fp32 (issue 10)
    freqs = 1.0 / (10000 ** (torch.arange(0, freq_dim, 2, dtype=torch.float32) / freq_dim))
    return (1e4 / max_period) * freqs


def sinusoidal_embedding(t: Tensor, freqs: Tensor) -> Tensor:
    """(B,) times -> (B, F) features ``[cos(t f), sin(t f)]`` (Eq. 30), in fp32 (fp64 for fp64 t)."""
    dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    args = t.to(dtype)[:, None] * freqs.to(t.device, dtype)[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimeEmbedder(nn.Module):
    """Sinusoidal features followed by an MLP: ``Linear(F, D), SiLU, Linear(D, D)``.

    ``zero_output=True`` zero-initialises the last layer, so a fresh embedder outputs 0; the
    offset embedder for (s - t) uses it so a new network is s-independent (§3.5.2).
    """

    def __init__(self, dim: int, freq_dim: int = 256, max_period: float = 1e4, zero_output: bool = False):
        super().__init__()
        self.freq_dim = freq_dim
        self.max_period = max_period
        self.register_buffer("freqs", sinusoidal_frequencies(freq_dim, max_period), persistent=False)
        first, last = nn.Linear(freq_dim, dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(first, nn.SiLU(), last)  # keys mlp.0 / mlp.2, as MMAudio's
        nn.init.normal_(first.weight, std=0.02)
        nn.init.normal_(last.weight, std=0.02)
        if zero_output:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    freqs: Tensor  # a buffer (not saved: recomputed from freq_dim and max_period)

    def forward(self, t: Tensor) -> Tensor:
        emb = sinusoidal_embedding(t, self.freqs)
        return self.mlp(emb.to(self.linears()[0].weight.dtype))

    def linears(self) -> tuple[nn.Linear, nn.Linear]:
        """The MLP's two Linear layers (first, last)."""
        return cast(nn.Linear, self.mlp[0]), cast(nn.Linear, self.mlp[2])


class TwoTimeEmbedder(nn.Module):
    """Embed t and the offset (s - t) separately and sum them (§3.5.2).

    At s = t the offset embedding is that of 0, a constant, so the network degenerates to an
    instantaneous-velocity model.
    """

    def __init__(self, dim: int, freq_dim: int = 256, max_period: float = 1e4):
        super().__init__()
        self.t_embed = TimeEmbedder(dim, freq_dim, max_period)
        self.offset_embed = TimeEmbedder(dim, freq_dim, max_period, zero_output=True)

    def forward(self, t: Tensor, s: Tensor) -> Tensor:
        return self.t_embed(t) + self.offset_embed(s - t)
