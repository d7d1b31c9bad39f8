"""MeanFlow (Geng et al. 2025), the objective of MF-MJT and MeanAudio, on our network and data.

Differentiating (s - t) u(z_t, t, s) = int_t^s v dtau with respect to t gives the MeanFlow
identity in the paper's convention (t = 1 noise, s <= t):

    u(z_t, t, s) = v(z_t, t) - (t - s) d/dt u(z_t, t, s),   d/dt = v . d/dz + d/dt (partial)

The target sg(v_mix - (t - s) du/dt) uses one Jacobian-vector product along (v_mix, 1, 0).
Time sampling, training-time guidance (v_mix) and the adaptive weight are shared with
velocity consistency, so the three objectives compare on identical networks and settings.
PyTorch's flash SDPA kernels have no forward-mode AD, so the JVP runs with the math kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from soundvcm.flow import interpolate, path_velocity
from soundvcm.network.protocol import VelocityNet, call_network
from soundvcm.objectives.base import Batch, LossOutput, per_row_mse, row_adaptive_weight
from soundvcm.objectives.guidance import TrainingGuidance, prepare_guidance
from soundvcm.objectives.time_sampling import TimeSampling


@dataclass(frozen=True)
class MeanFlowConfig:
    time: TimeSampling = field(default_factory=TimeSampling)
    guidance: TrainingGuidance = field(default_factory=TrainingGuidance)
    adaptive_p: float = 1.0
    adaptive_eps: float = 0.01
    adaptive_p_equal: float | None = None  # as in VelocityConsistencyConfig
    adaptive_eps_equal: float | None = None


class MeanFlow:
    """u_tgt = v_mix - (t - s) du/dt, du/dt by JVP, adaptive L2 loss."""

    name = "meanflow"

    def __init__(self, config: MeanFlowConfig = MeanFlowConfig(), total_steps: int = 1):
        self.config = config
        self.total_steps = total_steps

    def loss(self, net: VelocityNet, batch: Batch, step: int, generator: torch.Generator | None = None) -> LossOutput:
        cfg = self.config
        x0 = batch.x0.float()
        b = x0.shape[0]
        t, s = cfg.time.sample(b, generator, x0.device)
        eps = torch.randn(x0.shape, generator=generator, device=x0.device)
        x_t = interpolate(x0, eps, t)
        v_t = path_velocity(x0, eps)
        prepared, prepared_null, is_null, uncaptioned, _ = prepare_guidance(
            net,
            batch.conditions,
            generator,
            cfg.guidance.dropout,
            uncaptioned=cfg.guidance.prompt_scale > 0,
            kept=batch.kept,
        )
        v_mix = cfg.guidance.mixed_velocity(net, x_t, t, v_t, prepared, prepared_null, is_null, uncaptioned)

        def average_velocity(z, tt):
            return call_network(net, z, tt, s, prepared)

        with sdpa_kernel(SDPBackend.MATH):  # forward-mode AD needs the math attention kernel
            # d/dt u(z_t, t, s) along the flow: tangent (dz/dt, dt/dt, ds/dt) = (v_mix, 1, 0)
            u, dudt = torch.func.jvp(average_velocity, (x_t, t), (v_mix, torch.ones_like(t)))  # type: ignore[misc]
        gap = (t - s).reshape((-1,) + (1,) * (x0.ndim - 1))
        target = (v_mix - gap * dudt).detach()  # the MeanFlow identity, stop-gradient target
        mse = per_row_mse(u, target)
        w = row_adaptive_weight(
            mse, t, s, cfg.adaptive_p, cfg.adaptive_eps, cfg.adaptive_p_equal, cfg.adaptive_eps_equal
        )
        return LossOutput(loss=(w * mse).mean(), t=t, s=s, mse=mse.detach())
