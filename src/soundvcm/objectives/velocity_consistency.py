"""Velocity consistency training (§3.2-3.3, Eq. 10-13, Algorithm 1).

For a row with s < t the network regresses onto

    lambda v_mix + (1 - lambda) u_theta-(x_hat_l, l, s),   x_hat_l = x_t + (l - t) v_mix     (Eq. 10)

with l = t + (s - t) lambda (Eq. 13) and lambda decaying exponentially over training (Eq. 12).
A fraction r of rows has t = s and gets lambda = 1, the flow-matching target. Guidance is
baked in through the mixed velocity v_mix (Eq. 16, see :mod:`soundvcm.objectives.guidance`),
and each row's loss is scaled by the adaptive weight sg(1 / (MSE + eps)^p) (Eq. 11); the
``vcm_split_p`` preset gives the t = s rows their own p = 0 (a documented deviation, issue 11).
With ``teacher.source`` set (issue 33, a deviation: distillation), a frozen flow-matching teacher's
guided velocity takes v_mix's place (:func:`soundvcm.objectives.guidance.teacher_velocity`); the
trainer loads it into :attr:`VelocityConsistency.teacher`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from soundvcm.conditions import select_rows
from soundvcm.flow import interpolate, jump, path_velocity
from soundvcm.network.protocol import VelocityNet, call_network
from soundvcm.objectives.base import Batch, LossOutput, per_row_mse, row_adaptive_weight
from soundvcm.objectives.guidance import TeacherGuidance, TrainingGuidance, prepare_guidance, teacher_velocity
from soundvcm.objectives.time_sampling import TimeSampling


def lambda_schedule(step: int, total_steps: int, lambda_init: float, lambda_end: float) -> float:
    """lambda = lambda_init (lambda_end / lambda_init)^(step / total)  (Eq. 12), step clipped to total."""
    frac = min(max(step, 0), total_steps) / max(total_steps, 1)
    return lambda_init * (lambda_end / lambda_init) ** frac


def intermediate_time(t: Tensor, s: Tensor, lam: float, min_gap: float) -> tuple[Tensor, Tensor]:
    """l = t + (s - t) lambda (Eq. 13), clamped to s <= l <= t - min_gap; returns (l, lambda_eff).

    lambda_eff = (l - t) / (s - t) is Eq. 7's lambda for the clamped l, so the target stays
    the consistent interpolation of Eq. 7 even where the clamp acts.
    """
    l = t + (s - t) * lam
    l = torch.minimum(l, t - min_gap)
    l = torch.maximum(l, s)
    lam_eff = (t - l) / (t - s)
    return l, lam_eff


@dataclass(frozen=True)
class VelocityConsistencyConfig:
    """Every hyperparameter of Alg. 1; defaults are §4.3's except m (see ``OBJECTIVE_PRESETS``)."""

    time: TimeSampling = field(default_factory=TimeSampling)
    guidance: TrainingGuidance = field(default_factory=TrainingGuidance)
    teacher: TeacherGuidance = field(default_factory=TeacherGuidance)  # off unless teacher.source is set
    lambda_init: float = 1 / 10
    lambda_end: float = 1 / 500
    adaptive_p: float = 1.0
    adaptive_eps: float = 0.01
    # p and eps of Eq. 11 on the t = s rows only; None: the same as above (Alg. 1, one p for all rows).
    # A deviation from the paper, off by default; see objectives.base.row_adaptive_weight.
    adaptive_p_equal: float | None = None
    adaptive_eps_equal: float | None = None

    def __post_init__(self) -> None:
        for name in ("adaptive_p", "adaptive_p_equal"):
            if (getattr(self, name) or 0.0) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 < self.lambda_end <= self.lambda_init <= 1.0:
            raise ValueError(f"need 0 < lambda_end <= lambda_init <= 1, got {self.lambda_init}, {self.lambda_end}")


class VelocityConsistency:
    """Algorithm 1: the guided velocity-consistency loss."""

    name = "vcm"

    def __init__(self, config: VelocityConsistencyConfig = VelocityConsistencyConfig(), total_steps: int = 1):
        self.config = config
        self.total_steps = total_steps
        # the frozen FMs of config.teacher.source and .uncaptioned_source, set by their loader
        self.teacher: VelocityNet | None = None
        self.uncaptioned_teacher: VelocityNet | None = None

    def lam(self, step: int) -> float:
        return lambda_schedule(step, self.total_steps, self.config.lambda_init, self.config.lambda_end)

    def targets(
        self,
        net: VelocityNet,
        x_t: Tensor,
        t: Tensor,
        s: Tensor,
        v_mix: Tensor,
        prepared,
        lam: float,
    ) -> Tensor:
        """lambda v_mix + (1 - lambda) u_theta-(x_hat_l, l, s) (Eq. 10); v_mix where t = s."""
        cfg = self.config
        target = v_mix.clone()
        gap = (s < t).nonzero().squeeze(1)
        if gap.numel():
            l, lam_eff = intermediate_time(t[gap], s[gap], lam, cfg.time.min_gap)  # Alg. 1 l.6
            x_l = jump(x_t[gap], t[gap], l, v_mix[gap])  # x_hat_l = x_t + (l - t) v_mix
            with torch.no_grad():
                u_ls = call_network(net, x_l, l, s[gap], select_rows(prepared, gap))
            lb = lam_eff.reshape((-1,) + (1,) * (v_mix.ndim - 1))
            target[gap] = lb * v_mix[gap] + (1 - lb) * u_ls
        return target

    def loss(self, net: VelocityNet, batch: Batch, step: int, generator: torch.Generator | None = None) -> LossOutput:
        cfg = self.config
        x0 = batch.x0.float()
        b = x0.shape[0]
        t, s = cfg.time.sample(b, generator, x0.device)  # Alg. 1 l.2
        eps = torch.randn(x0.shape, generator=generator, device=x0.device)
        x_t = interpolate(x0, eps, t)  # Alg. 1 l.3
        v_t = path_velocity(x0, eps)
        guidance = cfg.guidance
        prepared, prepared_null, is_null, uncaptioned, dropped = prepare_guidance(
            net,
            batch.conditions,
            generator,
            guidance.dropout,
            uncaptioned=guidance.prompt_scale > 0,
            kept=batch.kept,
        )
        if cfg.teacher.source:  # the guided teacher's velocity (a deviation, module docstring)
            if self.teacher is None:
                raise RuntimeError(f"teacher.source={cfg.teacher.source} is set but no teacher was loaded")
            teachers = (self.teacher, self.uncaptioned_teacher)
            v_mix = teacher_velocity(teachers, x_t, t, batch.conditions, dropped, is_null, cfg.teacher)
        else:  # Alg. 1 l.4-5
            v_mix = guidance.mixed_velocity(net, x_t, t, v_t, prepared, prepared_null, is_null, uncaptioned)
        lam = self.lam(step)
        target = self.targets(net, x_t, t, s, v_mix, prepared, lam)  # Alg. 1 l.6-7
        u = call_network(net, x_t, t, s, prepared)  # u_ts, Alg. 1 l.7
        mse = per_row_mse(u, target)  # Alg. 1 l.8
        w = row_adaptive_weight(  # Alg. 1 l.9 (Eq. 11), optionally with its own p on t = s rows
            mse, t, s, cfg.adaptive_p, cfg.adaptive_eps, cfg.adaptive_p_equal, cfg.adaptive_eps_equal
        )
        return LossOutput(loss=(w * mse).mean(), t=t, s=s, mse=mse.detach(), extras={"lambda": lam})
