"""The paper's time convention, defined once (§3.1, Eq. 1-5).

Every module in soundvcm uses this convention and nothing else:

* ``t = 0`` is data and ``t = 1`` is noise. A data sample ``x0`` and a noise sample
  ``eps ~ N(0, I)`` define the straight path ``x_t = (1 - t) * x0 + t * eps``.
* The (conditional) velocity along that path is ``v = d x_t / dt = eps - x0``; the
  marginal velocity ``v(x_t, t)`` is its conditional expectation (Eq. 1).
* Sampling integrates ``dX/dt = v(X, t)`` from ``t = 1`` down to ``t = 0`` (Eq. 2).
* The network predicts the *average* velocity ``u(x_t, t, s)`` between ``t`` and
  ``s <= t`` (Eq. 5), so that one jump ``x_s = x_t + (s - t) * u(x_t, t, s)`` is
  exact, and ``u(x, t, t) = v(x, t)``.

MMAudio uses the opposite convention (``t = 1`` is data, ``v_m = x0 - eps``):
``t_paper = 1 - t_mmaudio`` and ``v_paper = -v_mmaudio``; see :func:`from_mmaudio_time`
and :func:`from_mmaudio_velocity`.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["interpolate", "path_velocity", "jump", "from_mmaudio_time", "from_mmaudio_velocity"]


def _bcast(t: Tensor, like: Tensor) -> Tensor:
    """Reshape per-row times (B,) to broadcast against a (B, ...) tensor."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    return t.reshape(t.shape + (1,) * (like.ndim - t.ndim))


def interpolate(x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
    """x_t = (1 - t) x0 + t eps (§3.1); t is a scalar or one time per row."""
    tb = _bcast(t, x0)
    return (1 - tb) * x0 + tb * eps


def path_velocity(x0: Tensor, eps: Tensor) -> Tensor:
    """The per-sample velocity eps - x0 that regresses onto v(x_t, t) (Eq. 4)."""
    return eps - x0


def jump(x_t: Tensor, t: Tensor, s: Tensor, average_velocity: Tensor) -> Tensor:
    """x_s = x_t + (s - t) u(x_t, t, s): one exact step with the average velocity (Eq. 5-6)."""
    return x_t + (_bcast(s, x_t) - _bcast(t, x_t)) * average_velocity


def from_mmaudio_time(t_mmaudio: Tensor) -> Tensor:
    """Map an MMAudio time (t=1 data) to the paper's time (t=1 noise)."""
    return 1 - t_mmaudio


def from_mmaudio_velocity(v_mmaudio: Tensor) -> Tensor:
    """Map an MMAudio velocity (data - noise) to the paper's velocity (noise - data)."""
    return -v_mmaudio
