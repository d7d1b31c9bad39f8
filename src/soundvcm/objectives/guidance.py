"""Classifier-free guidance baked into training, with mixed velocities (§3.3, Eq. 14-16, Alg. 1).

Shared by velocity consistency and MeanFlow so both learn the same guided field:

    v_mix = m (w (eps - x0) + (1 - w) v_uncond) + (1 - m) v_guided        (Eq. 16, Alg. 1 l.5)

with v_uncond = u(x_t, t, t, phi) and v_guided = u(x_t, t, t, c), both without gradient.
Guidance applies only where t lies in the guidance window [0, t_max]; elsewhere w = 1, so the
model learns the plain conditional field there. Null rows (condition phi) never receive
guidance: they regress onto eps - x0.

Prompt guidance baked in (``prompt_scale`` g, issue 33; not in the paper): inside the window,
conditional rows add g (v_guided - v_uncaptioned), v_uncaptioned = u(x_t, t, t, c without its
caption), the training-time form of :class:`soundvcm.sampling.PromptGuided`, so a one-step model
follows a caption that disagrees with the picture at no sampling cost. The term reads the model's
own outputs, and so does Eq. 16's (1 - m) v_guided: along the caption's effect D = u(c) - u(c
without caption) the target is m w D_0 + (1 - m) D + g D, whose fixed point D = m w D_0 / (m - g)
is the plain baked CFG's w D_0 scaled by m / (m - g) (m = 0.25, g = 0.15: 2.5x), and which has
none for g >= m (measured: g = 0.75 with m = 0.25 diverged within 200 steps). Hence 0 <= g < m.

A guided teacher (``TeacherGuidance``, issue 33; a deviation from Alg. 1, which trains from scratch):
a frozen flow-matching network's guided velocity replaces v_mix as the target's instantaneous
velocity,

    v_T = w (v_c + G (v_c - v_uncaptioned)) + (1 - w) v_null          (Eq. 15 around PromptGuided)

the very field the FM's sampler follows with ``--prompt-scale G`` (CFG's null branch passed through),
on conditional rows; null rows get the teacher's v_null. Nothing feeds back (the teacher is fixed),
so G is not bounded by m as the baked g is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from soundvcm.conditions import (
    ConditionDropout,
    Conditions,
    Prepared,
    batch_size_of,
    concat_rows,
    select_rows,
    without_captions,
)
from soundvcm.network.protocol import VelocityNet, call_network


@dataclass(frozen=True)
class TrainingGuidance:
    """Training-time CFG: scale w, window [0, t_max], velocity mix ratio m, null-row dropout."""

    scale: float = 4.0
    t_max: float = 0.8
    mix: float = 0.25
    dropout: ConditionDropout = field(default_factory=lambda: ConditionDropout(row_prob=0.1))
    prompt_scale: float = 0.0  # g of the baked prompt guidance (module docstring), < mix; 0: off

    def __post_init__(self) -> None:
        if not 0.0 <= self.mix <= 1.0:
            raise ValueError(f"velocity mix ratio m must lie in [0, 1], got {self.mix}")
        if self.prompt_scale != 0.0 and not 0.0 < self.prompt_scale < self.mix:
            raise ValueError(
                f"prompt_scale must lie in [0, mix = {self.mix}) (its target feeds back: the caption's effect "
                f"is scaled by mix / (mix - prompt_scale)), got {self.prompt_scale}"
            )

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
        prepared_uncaptioned: Prepared | None = None,
    ) -> Tensor:
        """v_mix of Eq. 16 for every row; only the rows that need them get network passes. With
        ``prompt_scale`` and ``prepared_uncaptioned`` (``prepared`` without captions), the rows inside
        the window also get g (v_guided - v_uncaptioned) (module docstring)."""
        w = self.row_scales(t, is_null)
        v_mix = v_t.clone()
        cond_rows = (~is_null).nonzero().squeeze(1)
        if cond_rows.numel() == 0:
            return v_mix
        wb = w[cond_rows].reshape((-1,) + (1,) * (v_t.ndim - 1))
        in_window = w[cond_rows] != 1.0
        # the unconditional branch is only needed where w != 1 (inside the window) and m > 0
        need_uncond = in_window & (self.mix > 0)
        un_rows = cond_rows[need_uncond]
        uncaptioned = prepared_uncaptioned if self.prompt_scale else None
        cap_rows = cond_rows[in_window] if uncaptioned is not None else cond_rows[:0]
        # one batched pass: guided velocity on all conditional rows, unconditional where needed, and
        # the same inputs without their captions where prompt guidance applies
        n_c, n_u = cond_rows.numel(), un_rows.numel()
        xs = torch.cat([x_t[cond_rows], x_t[un_rows], x_t[cap_rows]])
        ts = torch.cat([t[cond_rows], t[un_rows], t[cap_rows]])
        parts = [select_rows(prepared, cond_rows), select_rows(prepared_null, un_rows)]
        if uncaptioned is not None and cap_rows.numel():
            parts.append(select_rows(uncaptioned, cap_rows))
        out = call_network(net, xs, ts, ts, concat_rows(*parts))
        v_guided = out[:n_c]
        v_uncond = torch.zeros_like(v_guided)
        v_uncond[need_uncond] = out[n_c : n_c + n_u]
        v_c = v_t[cond_rows]
        mixed = self.mix * (wb * v_c + (1 - wb) * v_uncond) + (1 - self.mix) * v_guided  # Eq. 16
        if cap_rows.numel():  # baked prompt guidance: + g (v_guided - v_uncaptioned) inside the window
            mixed[in_window] += self.prompt_scale * (v_guided[in_window] - out[n_c + n_u :])
        v_mix[cond_rows] = mixed
        return v_mix


@dataclass(frozen=True)
class TeacherGuidance:
    """A frozen flow-matching teacher (module docstring): its model name or checkpoint, its CFG
    scale w and prompt scale G. ``source`` empty: off (Alg. 1's own mixed velocities).
    ``uncaptioned_source``: a second FM whose CFG field (scale w, no prompt guidance) is the target
    of the rows without a caption (dropped, or null rows), so that what the model does with no
    prompt can come from a teacher that follows the picture, and what it does with one from a
    teacher that follows the caption; empty: ``source`` for every row."""

    source: str = ""
    cfg_scale: float = 4.5
    prompt_scale: float = 0.0
    uncaptioned_source: str = ""

    def __post_init__(self) -> None:
        if self.cfg_scale < 1.0 or self.prompt_scale < 0.0:
            raise ValueError(
                f"teacher cfg_scale must be >= 1 and prompt_scale >= 0, got {self.cfg_scale}, {self.prompt_scale}"
            )


def own_nulls(teacher: VelocityNet, conditions: Conditions, dropped: Conditions) -> tuple[Conditions, Tensor]:
    """``dropped`` with each dropped group's features replaced by the teacher's own null features (the
    student's learnt ones drift from the teacher's in training), and which rows have no caption."""
    b = batch_size_of(conditions)
    null = teacher.null_conditions(b)
    out = {}
    for key, value in dropped.items():
        gone = (value != conditions[key]).flatten(1).any(1).view(-1, *[1] * (value.ndim - 1))
        out[key] = torch.where(gone, null[key].to(value), conditions[key])
    text = teacher.condition_groups.get("text", ())
    no_caption = torch.zeros(b, dtype=torch.bool, device=next(iter(conditions.values())).device)
    for key in text:
        no_caption |= (out[key] == null[key].to(out[key])).flatten(1).all(1)
    return out, no_caption


def guided_velocity(teacher: VelocityNet, x_t: Tensor, t: Tensor, own: Conditions, is_null: Tensor, w: float, g: float):
    """w (v_c + g (v_c - v_uncaptioned)) + (1 - w) v_null on conditional rows, v_null on null rows, in
    one batched pass of the teacher on its own conditions ``own`` (:func:`own_nulls`)."""
    b = x_t.shape[0]
    cond = (~is_null).nonzero().squeeze(1)
    prompt = g > 0 and "text" in teacher.condition_groups
    parts = [teacher.prepare(own), select_rows(teacher.prepare_null(b), cond)]
    rows = [torch.arange(b, device=x_t.device), cond]
    if prompt:
        parts.append(select_rows(teacher.prepare(without_captions(own, teacher)), cond))
        rows.append(cond)
    index = torch.cat(rows)
    out = call_network(teacher, x_t[index], t[index], t[index], concat_rows(*parts))
    v, n = out[:b].clone(), cond.numel()
    v_c, v_null = out[:b][cond], out[b : b + n]
    guided = v_c + g * (v_c - out[b + n :]) if prompt else v_c
    v[cond] = w * guided + (1 - w) * v_null  # Eq. 15 around PromptGuided
    return v


@torch.no_grad()
def teacher_velocity(
    teachers: tuple[VelocityNet, VelocityNet | None],
    x_t: Tensor,
    t: Tensor,
    conditions: Conditions,
    dropped: Conditions,
    is_null: Tensor,
    spec: TeacherGuidance,
) -> Tensor:
    """v_T of the module docstring for every row: the teacher's guided field; with a second teacher
    (``uncaptioned_source``), its CFG field on the rows without a caption and the null rows."""
    main, plain = teachers
    own, _ = own_nulls(main, conditions, dropped)
    v = guided_velocity(main, x_t, t, own, is_null, spec.cfg_scale, spec.prompt_scale)
    if plain is not None:
        own, no_caption = own_nulls(plain, conditions, dropped)
        rows = (no_caption | is_null).nonzero().squeeze(1)
        if rows.numel():
            sub = select_rows(own, rows)
            v[rows] = guided_velocity(plain, x_t[rows], t[rows], sub, is_null[rows], spec.cfg_scale, 0.0)
    return v


def prepare_guidance(
    net: VelocityNet,
    conditions,
    generator: torch.Generator | None,
    dropout: ConditionDropout,
    uncaptioned: bool = False,
    kept=None,
) -> tuple[Prepared, Prepared, Tensor, Prepared | None, Conditions]:
    """Drop conditions, then prepare the dropped and the fully null conditions once per batch, and
    (``uncaptioned``, for a network with a ``text`` group) the dropped conditions with every caption
    replaced by the null text, for baked prompt guidance. ``kept``: :attr:`Batch.kept`. Last, the
    dropped conditions themselves (what a guided teacher prepares for itself)."""
    batch = next(iter(conditions.values())).shape[0]
    null = net.null_conditions(batch)
    dropped, is_null = dropout.apply(conditions, null, net.condition_groups, generator, kept)
    prepared_uncaptioned = None
    with torch.no_grad():  # the unconditional branches are only ever used without gradient
        prepared_null = net.prepare_null(batch)
        if uncaptioned and "text" in net.condition_groups:
            prepared_uncaptioned = net.prepare(without_captions(dropped, net))
    return net.prepare(dropped), prepared_null, is_null, prepared_uncaptioned, dropped


__all__ = ["TeacherGuidance", "TrainingGuidance", "prepare_guidance", "teacher_velocity"]
