"""What every objective shares: the batch it reads, the output it returns, the adaptive weight.

An objective is one object with one call, ``loss(net, batch, step)``. It owns its time
sampling, condition dropout and targets; the trainer never branches on which objective runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from soundvcm.conditions import Batch
from soundvcm.network.protocol import VelocityNet


@dataclass
class LossOutput:
    """The scalar loss to backpropagate, plus per-row diagnostics (detached)."""

    loss: Tensor
    t: Tensor
    s: Tensor
    mse: Tensor
    extras: dict[str, float] = field(default_factory=dict)


class Objective(Protocol):
    """The objective protocol: ``loss(net, batch, step, generator=None) -> LossOutput``."""

    name: str
    total_steps: int

    @property
    def config(self) -> object:  # its frozen config: one of objectives.ObjectiveConfig (objectives.config_of)
        ...

    def loss(
        self, net: VelocityNet, batch: Batch, step: int, generator: torch.Generator | None = None
    ) -> LossOutput: ...


def per_row_mse(pred: Tensor, target: Tensor, frame_weights: Tensor | None = None) -> Tensor:
    """The raw MSE of each row, averaged over its D data dimensions (Eq. 10's 1/D ||.||^2); with
    ``frame_weights`` (B, L) of mean 1 per row (:func:`loud_frame_weights`), a weighted mean over
    the L frames of (B, L, C) rows."""
    if frame_weights is None:
        return (pred - target).square().flatten(1).mean(dim=1)
    return ((pred - target).square().mean(dim=-1) * frame_weights).mean(dim=1)


def loud_frame_weights(x0: Tensor, strength: float) -> Tensor:
    """(B, L) weights of mean 1 per row that favour a clip's loud frames over its quiet bed (issue 33:
    a candidate cause of noise-shaped texture is that most frames are bed, so most of the loss is
    spent on modelling noise). A frame's loudness is the mean of its normalised latent channels (for
    the lite sets' mel latent, its mean log-mel above the data's mean); frames above the row's
    median get ``1 + strength * z`` (z: standard scores, clamped to [0, 3]), the rest 1, then the
    row is rescaled to mean 1 so the loss keeps its scale. ``strength`` 0: all ones."""
    loud = x0.float().mean(dim=-1)  # (B, L)
    z = (loud - loud.median(dim=1, keepdim=True).values) / loud.std(dim=1, keepdim=True).clamp_min(1e-6)
    w = 1.0 + strength * z.clamp(0.0, 3.0)
    return w / w.mean(dim=1, keepdim=True)


def adaptive_weight(mse: Tensor, p: float, eps: float) -> Tensor:
    """w(MSE) = sg(1 / (MSE + eps)^p) (Eq. 11, Alg. 1 line 9); p = 0 is the raw MSE."""
    return 1.0 / (mse.detach() + eps).pow(p)


def row_adaptive_weight(
    mse: Tensor,
    t: Tensor,
    s: Tensor,
    p: float,
    eps: float,
    p_equal: float | None = None,
    eps_equal: float | None = None,
) -> Tensor:
    """Eq. 11 per row, with its own (p, eps) on the t = s rows when ``p_equal``/``eps_equal`` are set.

    Deviation from Alg. 1 line 9 (which uses one p on every row), off by default: on t = s rows the
    target holds the stochastic term m w (eps - x0) at full weight, and w = 1 / (MSE + eps)^p with
    p = 1 turns the L2 regression into an M-estimator whose fixed point is near a *mode* of the
    posterior of that target rather than its mean, the velocity; with a per-row MSE over few
    dimensions (the analytic bed's D = 2) the shift is large (see BENCHMARKS.md, issue 11). On
    s < t rows the stochastic term is scaled by lambda m w and the bias is small, so p stays there.
    """
    w = adaptive_weight(mse, p, eps)
    if p_equal is None and eps_equal is None:
        return w
    w_equal = adaptive_weight(mse, p if p_equal is None else p_equal, eps if eps_equal is None else eps_equal)
    return torch.where(t == s, w_equal, w)
