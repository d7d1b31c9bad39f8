"""The network protocol every objective and sampler relies on (§3.2, §3.5).

A network maps ``(x, t, s, prepared)`` to the average velocity ``u(x, t, s)`` in the
paper's convention (t = 1 noise, s <= t; see :mod:`soundvcm.flow`), and nothing more.
Condition preprocessing is split off: ``prepare(conditions)`` is computed once per batch and
reused by every forward pass of a training step and every step of a sampler.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from soundvcm.conditions import Conditions, Prepared


class VelocityNet(nn.Module):
    """Base class: subclasses define modalities, null features, ``prepare`` and ``forward``.

    * ``condition_groups``: dropout group -> modality keys (e.g. ``{"video": ("clip", "sync")}``).
    * ``null_conditions(b)``: the learned (or frozen) null feature of each modality, for b rows.
    * ``prepare(conditions)``: t-independent condition processing, batch-first dict out.
    * ``forward(x, t, s, prepared)``: average velocity, same shape as ``x``; t and s are (B,).
    """

    condition_groups: Mapping[str, tuple[str, ...]] = {}

    def null_conditions(self, batch_size: int) -> Conditions:
        raise NotImplementedError

    def prepare(self, conditions: Conditions) -> Prepared:
        raise NotImplementedError

    def forward(self, x: Tensor, t: Tensor, s: Tensor, prepared: Prepared) -> Tensor:  # noqa: D102
        raise NotImplementedError

    def prepare_null(self, batch_size: int) -> Prepared:
        """``prepare`` applied to the null conditions: the unconditional branch of CFG.

        Null conditions are the same for every row, so one row is prepared and broadcast.
        """
        one = self.prepare(self.null_conditions(1))
        return {k: v.expand(batch_size, *v.shape[1:]) for k, v in one.items()}


def call_network(net: nn.Module, x: Tensor, t: Tensor, s: Tensor, prepared: Prepared) -> Tensor:
    """Run the network and return fp32 (ODE maths, losses and targets stay fp32)."""
    return net(x, t, s, prepared).float()


class Autocast(nn.Module):
    """The network's forward under autocast at ``dtype`` (None: plain fp32), output in fp32: where the
    precision of a run lives (chosen by :mod:`soundvcm.precision`), outside the objectives'
    hyperparameters and the samplers. Everything else (``prepare``, the null conditions, the
    latent statistics, ...) is the wrapped network's."""

    def __init__(self, net: nn.Module, dtype: torch.dtype | None):
        super().__init__()
        self.net, self.dtype = net, dtype

    def forward(self, x: Tensor, t: Tensor, s: Tensor, prepared: Prepared) -> Tensor:
        if self.dtype is None:
            return self.net(x, t, s, prepared).float()
        with torch.autocast(device_type=x.device.type, dtype=self.dtype):
            return self.net(x, t, s, prepared).float()

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.net, name)


def autocast(net: nn.Module, dtype: torch.dtype | None) -> nn.Module:
    """``net`` under ``dtype`` autocast (the network itself when ``dtype`` is None: no wrapper)."""
    return net if dtype is None else Autocast(net, dtype)
