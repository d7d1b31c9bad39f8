"""The lite2 sync feature: signed motion on a patch grid, one token per latent frame, in time order.

Why (issue 23): the lite set's motion-energy tokens kept Synchformer's overlapping layout, so the
network received them out of time order, and |f - f_prev| cannot show the *reversal* of motion
that marks an impact. A supervised probe reading "an impact in this latent frame" from each
candidate feature on the Foley world (BENCHMARKS.md, issue 23 section: ``soundvcm bench listen
--probe``, 200 training / 100 test clips) scored onset F1 0.50 for the old tokens in the network's
order, 0.70 for motion energy in time order, 0.74 for per-cell flow, 0.79 for flow plus energy
(this token; a perfect per-frame classifier: 0.99, another clip's events: 0.24).

Design:

* Samples: grey 64 x 64 frames at ``sync_fps`` = 2 per latent frame (86.13 fps for the 22.05 kHz
  latent), taken by timestamp (nearest frame). A 24 or 30 fps video repeats frames at that rate;
  a repeated frame moves nothing, so no duplicate ever shows up as a stop in the motion.
* Per pair of consecutive samples: Lucas-Kanade flow on an 8 x 8 grid of 8 x 8-pixel cells (the
  least-squares (dx, dy) that explains the temporal difference by the spatial gradients of the
  pair's mean, both frames blurred 3 x 3 first; a small ridge keeps flat cells at 0), and the
  mean absolute difference per cell (motion energy).
* Token k = the pairs that end inside latent frame k: their flow summed (the displacement during
  the latent's 23 ms, signed-log compressed) and their energy summed (log1p(16 e)): 128 + 64 =
  192 values. The first pair of a clip has no earlier sample and moves nothing.

No weights, no dependency beyond torch, microseconds per frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _gradients(x: Tensor) -> tuple[Tensor, Tensor]:
    """Central differences (replicated edges) of (N, 1, H, W)."""
    kx = torch.tensor([-0.5, 0.0, 0.5], device=x.device, dtype=x.dtype).view(1, 1, 1, 3)
    ix = F.conv2d(F.pad(x, (1, 1, 0, 0), mode="replicate"), kx)
    iy = F.conv2d(F.pad(x, (0, 0, 1, 1), mode="replicate"), kx.view(1, 1, 3, 1))
    return ix, iy


def cell_flow(a: Tensor, b: Tensor, grid: int = 8, ridge: float = 1e-4) -> Tensor:
    """Lucas-Kanade flow from ``a`` to ``b`` (N, 1, H, W) per cell of a grid x grid partition:
    (N, 2, grid, grid) displacements in pixels (x right, y down)."""

    def blur(z: Tensor) -> Tensor:
        return F.avg_pool2d(F.pad(z, (1, 1, 1, 1), mode="replicate"), 3, 1)

    a, b = blur(a), blur(b)
    ix, iy = _gradients((a + b) / 2)
    it = b - a

    def cells(z: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(z, grid)

    sxx, syy, sxy = cells(ix * ix) + ridge, cells(iy * iy) + ridge, cells(ix * iy)
    sxt, syt = cells(ix * it), cells(iy * it)
    det = sxx * syy - sxy * sxy
    u = -(syy * sxt - sxy * syt) / det  # the 2 x 2 normal equations, solved per cell
    v = -(sxx * syt - sxy * sxt) / det
    return torch.cat([u, v], dim=1)


class MotionFlowSync(nn.Module):
    def __init__(self, size: int = 64, grid: int = 8, samples_per_token: int = 2, energy_gain: float = 16.0):
        super().__init__()
        self.size, self.grid, self.per_token, self.gain = size, grid, samples_per_token, energy_gain
        self._device_probe: Tensor
        self.register_buffer("_device_probe", torch.zeros(()), persistent=False)

    @property
    def dim(self) -> int:
        return 3 * self.grid * self.grid

    @torch.inference_mode()
    def forward(self, frames: Tensor) -> Tensor:
        """uint8 (B, T, 1, H, W) at ``sync_fps`` -> (B, T // samples_per_token, 192), in time order."""
        b, t = frames.shape[:2]
        tokens = t // self.per_token
        if tokens < 1:
            raise ValueError(f"sync features need at least {self.per_token} frames, got {t}")
        x = frames[:, : tokens * self.per_token].to(self._device_probe.device).float().div(255.0)
        if x.shape[2] != 1:
            x = x.mean(dim=2, keepdim=True)
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x.flatten(0, 1), size=(self.size, self.size), mode="area").unflatten(0, (b, -1))
        prev = torch.cat([x[:, :1], x[:, :-1]], dim=1)  # sample i pairs with i - 1 (the first with itself)
        a, c = prev.flatten(0, 1), x.flatten(0, 1)
        flow = cell_flow(a, c, self.grid)  # (B*T, 2, g, g)
        moved = (a != c).flatten(1).any(1)  # a repeated frame moves nothing
        flow = flow * moved[:, None, None, None]
        energy = F.adaptive_avg_pool2d((c - a).abs(), self.grid)  # (B*T, 1, g, g)
        per = self.per_token
        flow = flow.view(b, tokens, per, -1).sum(2)  # the displacement during each latent frame
        energy = energy.view(b, tokens, per, -1).sum(2)
        return torch.cat([torch.sign(flow) * torch.log1p(flow.abs()), torch.log1p(self.gain * energy)], dim=-1)
