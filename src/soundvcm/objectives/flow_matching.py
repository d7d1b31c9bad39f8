"""Conditional flow matching (Eq. 4): the multi-step baseline, MMAudio's recipe.

t ~ sigmoid(N(0, 1)), x_t = (1 - t) x0 + t eps, and u(x_t, t, t, c) regresses onto eps - x0
with plain MSE. Conditions are dropped per group with probability 0.1 (video and text
independently, as MMAudio does), so the Euler sampler can apply CFG at inference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from soundvcm.conditions import ConditionDropout
from soundvcm.flow import interpolate, path_velocity
from soundvcm.network.protocol import VelocityNet, call_network
from soundvcm.objectives.base import Batch, LossOutput, loud_frame_weights, per_row_mse
from soundvcm.objectives.time_sampling import TimeSampling


@dataclass(frozen=True)
class FlowMatchingConfig:
    time: TimeSampling = field(default_factory=lambda: TimeSampling(mean=0.0, std=1.0, equal_ratio=1.0))
    dropout: ConditionDropout = field(default_factory=lambda: ConditionDropout(row_prob=0.0, group_prob=0.1))
    loud_frames: float = 0.0  # > 0: weigh a clip's loud frames up (base.loud_frame_weights; issue 33's candidate)


class FlowMatching:
    """Eq. 4: E || u(x_t, t, t, c) - (eps - x0) ||^2."""

    name = "fm"

    def __init__(self, config: FlowMatchingConfig = FlowMatchingConfig(), total_steps: int = 1):
        self.config = config
        self.total_steps = total_steps

    def loss(self, net: VelocityNet, batch: Batch, step: int, generator: torch.Generator | None = None) -> LossOutput:
        x0 = batch.x0.float()
        b = x0.shape[0]
        t = self.config.time.logit_normal(b, generator, x0.device)
        eps = torch.randn(x0.shape, generator=generator, device=x0.device)
        x_t = interpolate(x0, eps, t)
        null = net.null_conditions(b)
        dropped, _ = self.config.dropout.apply(batch.conditions, null, net.condition_groups, generator, batch.kept)
        u = call_network(net, x_t, t, t, net.prepare(dropped))
        weights = loud_frame_weights(x0, self.config.loud_frames) if self.config.loud_frames else None
        mse = per_row_mse(u, path_velocity(x0, eps), weights)
        return LossOutput(loss=mse.mean(), t=t, s=t, mse=mse.detach())
