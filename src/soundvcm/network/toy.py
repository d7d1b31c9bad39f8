"""A small conditional MLP with the real network's conditioning path, for the analytic test bed.

It mirrors the SoundVCM transformer where it matters for the method: the two-time embedding
(t and s - t, max_period 1e4, zero-initialised offset embedder; §3.5.2, B.2), a learned null
condition, a global condition summed from time and condition embeddings, and adaLN-modulated
residual blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from soundvcm.conditions import Conditions, Prepared
from soundvcm.network.embeddings import TwoTimeEmbedder
from soundvcm.network.protocol import VelocityNet


@dataclass(frozen=True)
class ToyNetConfig:
    """Sizes of the toy network; ``dim`` is the data dimension, conditions are one-hot classes."""

    dim: int = 2
    num_classes: int = 4
    width: int = 256
    depth: int = 4
    freq_dim: int = 128
    max_period: float = 1e4


class AdaLNBlock(nn.Module):
    """Residual MLP block modulated by the global condition: h + g * MLP(LN(h) (1 + a) + b)."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.SiLU(), nn.Linear(2 * width, width))
        out = nn.Linear(width, 3 * width)
        self.modulation = nn.Sequential(nn.SiLU(), out)
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        shift, scale, gate = self.modulation(c).chunk(3, dim=-1)
        return h + (1 + gate) * self.mlp(self.norm(h) * (1 + scale) + shift)


class ToyVelocityNet(VelocityNet):
    """u(x, t, s, class) for data in R^dim; the condition is a one-hot class vector."""

    condition_groups = {"class": ("class",)}

    def __init__(self, config: ToyNetConfig = ToyNetConfig()):
        super().__init__()
        self.config = config
        w = config.width
        self.in_proj = nn.Linear(config.dim, w)
        self.time_embed = TwoTimeEmbedder(w, config.freq_dim, config.max_period)
        self.cond_proj = nn.Sequential(nn.Linear(config.num_classes, w), nn.SiLU(), nn.Linear(w, w))
        self.null_class = nn.Parameter(torch.zeros(config.num_classes))  # learned null condition
        self.blocks = nn.ModuleList([AdaLNBlock(w) for _ in range(config.depth)])
        self.out_norm = nn.LayerNorm(w, elementwise_affine=False)
        self.out = nn.Linear(w, config.dim)

    def one_hot(self, labels: Tensor) -> Conditions:
        """Class labels (B,) -> the condition dict this network takes."""
        return {"class": nn.functional.one_hot(labels, self.config.num_classes).float()}

    def null_conditions(self, batch_size: int) -> Conditions:
        return {"class": self.null_class[None].expand(batch_size, -1)}

    def prepare(self, conditions: Conditions) -> Prepared:
        return {"global": self.cond_proj(conditions["class"])}

    def forward(self, x: Tensor, t: Tensor, s: Tensor, prepared: Prepared) -> Tensor:
        c = prepared["global"] + self.time_embed(t, s)  # global condition (B.1)
        h = self.in_proj(x)
        for block in self.blocks:
            h = block(h, c)
        return self.out(self.out_norm(h))
