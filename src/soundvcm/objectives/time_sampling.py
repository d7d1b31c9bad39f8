"""Time sampling for training (§3.2): logit-normal t, and (t, s) pairs with a t = s fraction.

Rows are laid out so that the first ``round(equal_ratio * B)`` rows have ``t = s`` (velocity
learning) and the rest have ``s < t`` (consistency learning); rows are i.i.d., so this order
loses nothing and lets objectives work on contiguous slices.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class TimeSampling:
    """t ~ sigmoid(N(mean, std)); a fraction ``equal_ratio`` (r) of rows gets s = t;
    for the rest, two draws sorted give s < t, with s <= t - min_gap (§3.2, §4.3)."""

    mean: float = -0.4
    std: float = 1.0
    equal_ratio: float = 0.75
    min_gap: float = 1e-4

    def __post_init__(self) -> None:
        if not 0.0 <= self.equal_ratio <= 1.0:
            raise ValueError(f"equal_ratio (r) must lie in [0, 1], got {self.equal_ratio}")
        if self.std <= 0:
            raise ValueError(f"std must be positive, got {self.std}")

    def num_equal(self, batch_size: int) -> int:
        """How many leading rows have t = s."""
        return int(round(self.equal_ratio * batch_size))

    def logit_normal(self, n: int, generator: torch.Generator | None = None, device=None) -> Tensor:
        return torch.sigmoid(self.mean + self.std * torch.randn(n, generator=generator, device=device))

    def sample(self, batch_size: int, generator: torch.Generator | None = None, device=None) -> tuple[Tensor, Tensor]:
        """Return (t, s), each (B,), with s = t on the first ``num_equal`` rows and s < t after."""
        n_eq = self.num_equal(batch_size)
        n_gap = batch_size - n_eq
        t_eq = self.logit_normal(n_eq, generator, device)
        pair = self.logit_normal(2 * n_gap, generator, device).reshape(2, n_gap)
        t_gap = pair.max(dim=0).values
        s_gap = torch.minimum(pair.min(dim=0).values, t_gap - self.min_gap).clamp_min(0.0)
        t = torch.cat([t_eq, t_gap])
        s = torch.cat([t_eq, s_gap])
        return t, s
