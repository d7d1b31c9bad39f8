"""Conditions, null conditions and condition dropout (§3.3, Alg. 1).

A *condition set* is a ``dict`` from modality name (``"clip"``, ``"sync"``, ``"text"``,
``"class"`` ...) to a batch-first feature tensor. Every network owns a learned (or frozen)
null feature per modality, ``net.null_conditions(batch_size)``, and groups its modalities
into *dropout groups* (MMAudio drops video = clip + sync together, and text on its own).

A row whose every group is replaced by its null feature is a *null row* (the paper's
condition phi): it is trained unconditionally and never receives guidance.

The helpers here are pure functions over such dicts, so objectives and samplers can
select, concatenate and mask rows without knowing which modalities exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

Conditions = dict[str, Tensor]
"""Raw per-modality condition features, batch first."""

Prepared = dict[str, Tensor]
"""Network-side, time-independent condition features (the output of ``net.prepare``), batch first."""

__all__ = [
    "Conditions",
    "Prepared",
    "ConditionDropout",
    "select_rows",
    "concat_rows",
    "replace_rows",
    "batch_size_of",
]


def batch_size_of(tree: Mapping[str, Tensor]) -> int:
    """The common leading dimension of every tensor in a condition dict."""
    sizes = {v.shape[0] for v in tree.values()}
    if len(sizes) != 1:
        raise ValueError(f"condition tensors disagree on batch size: { {k: tuple(v.shape) for k, v in tree.items()} }")
    return sizes.pop()


def select_rows(tree: Mapping[str, Tensor], index: Tensor | slice) -> dict[str, Tensor]:
    """Rows ``index`` of every tensor in the dict."""
    return {k: v[index] for k, v in tree.items()}


def concat_rows(*trees: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Concatenate dicts with equal keys along the batch dimension."""
    keys = trees[0].keys()
    return {k: torch.cat([t[k] for t in trees], dim=0) for k in keys}


def replace_rows(tree: Mapping[str, Tensor], other: Mapping[str, Tensor], mask: Tensor) -> dict[str, Tensor]:
    """Row-wise ``where(mask, other, tree)`` for every key (mask is (B,) bool)."""
    out = {}
    for k, v in tree.items():
        m = mask.reshape(mask.shape + (1,) * (v.ndim - 1))
        out[k] = torch.where(m, other[k].to(v.dtype), v)
    return out


def without_captions(conditions: Mapping[str, Tensor], net, *null_args) -> dict[str, Tensor]:
    """``conditions`` with the keys of ``net``'s ``text`` group replaced by its null features
    (``net.null_conditions(batch, *null_args)``, on the conditions' device): the other branch of
    prompt guidance (:class:`soundvcm.sampling.PromptGuided`)."""
    null = net.null_conditions(batch_size_of(conditions), *null_args)
    return dict(conditions) | {k: null[k].to(conditions[k].device) for k in net.condition_groups["text"]}


@dataclass
class Batch:
    """Clean data x0 (B, ...) in the paper's convention (t = 0) and its conditions: what the
    data layer draws and every objective trains on."""

    x0: Tensor
    conditions: Conditions
    # dropout group -> (B,) bool: rows whose group is never dropped on its own, only with the
    # whole row (e.g. a caption that disagrees with the picture: without it the audio is wrong)
    kept: Mapping[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class ConditionDropout:
    """Replace conditions by their null features during training (classifier-free guidance).

    ``row_prob``: probability that a whole row becomes null (the paper's phi, §3.3).
    ``group_prob``: probability that each dropout group is dropped independently
    (MMAudio's recipe: video and text each with 0.1).
    """

    row_prob: float = 0.1
    group_prob: float = 0.0

    def __post_init__(self) -> None:
        for name in ("row_prob", "group_prob"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"ConditionDropout.{name} must lie in [0, 1], got {p}")

    def apply(
        self,
        conditions: Mapping[str, Tensor],
        null: Mapping[str, Tensor],
        groups: Mapping[str, tuple[str, ...]],
        generator: torch.Generator | None = None,
        kept: Mapping[str, Tensor] | None = None,
    ) -> tuple[Conditions, Tensor]:
        """Return the dropped conditions and the (B,) bool mask of null rows. ``kept`` (group ->
        (B,) bool) exempts rows from a group's own drop; the whole-row drop still applies."""
        b = batch_size_of(conditions)
        device = next(iter(conditions.values())).device
        row_drop = torch.rand(b, generator=generator, device=device) < self.row_prob
        out = dict(conditions)
        all_dropped = torch.ones(b, dtype=torch.bool, device=device)
        for name, keys in groups.items():
            alone = torch.rand(b, generator=generator, device=device) < self.group_prob
            if kept and name in kept:
                alone &= ~kept[name].to(device)
            group_drop = row_drop | alone
            all_dropped &= group_drop
            sub = {k: out[k] for k in keys}
            out.update(replace_rows(sub, {k: null[k] for k in keys}, group_drop))
        return out, all_dropped
