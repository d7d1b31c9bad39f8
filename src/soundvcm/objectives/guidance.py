"""Classifier-free guidance baked into training, with mixed velocities (§3.3, Eq. 14-16, Alg. 1).

Shared by velocity consistency and MeanFlow so both learn the same guided field:

    v_mix = m (w (eps - x0) + (1 - w) v_uncond) + (1 - m) v_guided        (Eq. 16, Alg. 1 l.5)

with v_uncond = u(x_t, t, t, phi) and v_guided = u(x_t, t, t, c), both without gradient.
Guidance applies only where t lies in the guidance window [0, t_max]; elsewhere w = 1, so the
model learns the plain conditional field there. Null rows (condition phi) never receive
guidance: they regress onto eps - x0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from soundvcm.conditions import ConditionDropout, Prepared, concat_rows, select_rows
from soundvcm.network.protocol import VelocityNet, call_network


@dataclass(frozen=True)
class TrainingGuidance:
    """Training-time CFG: scale w, window [0, t_max], velocity mix ratio m, null-row dropout."""

    scale: float = 4.0
    t_max: float = 0.8
    mix: float = 0.25
    dropout: ConditionDropout = field(default_factory=lambda: ConditionDropout(row_prob=0.1))

    def __post_init__(self) -> None:
        if not 0.0 <= self.mix <= 1.0:
            raise ValueError(f"velocity mix ratio m must lie in [0, 1], got {self.mix}")

    def row_scales(self, t: Tensor, is_null: Tensor) -> Tensor:
        """w per row: the guidance scale inside [0, t_max] on conditional rows, 1 elsewhere."""
        guided = (~is_null) & (t <= self.t_max)
        return torch.where(guided, torch.full_like(t, self.scale), torch.ones_like(t))

    @torch.no_grad()
    def mixed_velocity(
        self,
        net: VelocityNet,
        x_t: Tensor,
        t: Tensor,
        v_t: Tensor,
        prepared: Prepared,
        prepared_null: Prepared,
        is_null: Tensor,
    ) -> Tensor:
        """v_mix of Eq. 16 for every row; only the rows that need them get network passes."""
        w = self.row_scales(t, is_null)
        v_mix = v_t.clone()
        cond_rows = (~is_null).nonzero().squeeze(1)
        if cond_rows.numel() == 0:
            return v_mix
        wb = w[cond_rows].reshape((-1,) + (1,) * (v_t.ndim - 1))
        # the unconditional branch is only needed where w != 1 (inside the window) and m > 0
        need_uncond = (w[cond_rows] != 1.0) & (self.mix > 0)
        un_rows = cond_rows[need_uncond]
        # one batched pass: guided velocity on all conditional rows, unconditional where needed
        xs = torch.cat([x_t[cond_rows], x_t[un_rows]])
        ts = torch.cat([t[cond_rows], t[un_rows]])
        preps = concat_rows(select_rows(prepared, cond_rows), select_rows(prepared_null, un_rows))
        out = call_network(net, xs, ts, ts, preps)
        v_guided = out[: cond_rows.numel()]
        v_uncond = torch.zeros_like(v_guided)
        v_uncond[need_uncond] = out[cond_rows.numel() :]
        v_c = v_t[cond_rows]
        mixed = self.mix * (wb * v_c + (1 - wb) * v_uncond) + (1 - self.mix) * v_guided  # Eq. 16
        v_mix[cond_rows] = mixed
        return v_mix


def prepare_with_null(
    net: VelocityNet, conditions, generator: torch.Generator | None, dropout: ConditionDropout
) -> tuple[Prepared, Prepared, Tensor]:
    """Drop conditions, then prepare the dropped and the fully null conditions once per batch."""
    batch = next(iter(conditions.values())).shape[0]
    null = net.null_conditions(batch)
    dropped, is_null = dropout.apply(conditions, null, net.condition_groups, generator)
    with torch.no_grad():  # the unconditional branch is only ever used without gradient
        prepared_null = net.prepare_null(batch)
    return net.prepare(dropped), prepared_null, is_null


__all__ = ["TrainingGuidance", "prepare_with_null"]
