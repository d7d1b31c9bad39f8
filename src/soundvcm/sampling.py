"""Samplers as pure functions (Algorithm 2 and the Euler + CFG baseline), and the one entry point.

:func:`sample` with :class:`SamplerOptions` is what the pipeline, the trainer's samples, the
benchmarks and evaluation call; it picks the sampler by ``options.kind``. Both samplers
integrate from t = 1 (noise) to t = 0 (data) in the paper's convention
(:mod:`soundvcm.flow`), keep their state in fp32, and take the initial noise explicitly or a
seed / generator. They call ``net(x, t, s, prepared)`` with conditions prepared once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from soundvcm.conditions import Prepared
from soundvcm.flow import jump
from soundvcm.network.protocol import call_network


def initial_noise(
    shape: Sequence[int], seed: int | None = None, generator: torch.Generator | None = None, device=None
) -> Tensor:
    """x_1 ~ N(0, I) in fp32, from a seed or a generator (a seed wins if both are given)."""
    if seed is not None:
        generator = torch.Generator(device=device or "cpu").manual_seed(seed)
    return torch.randn(tuple(shape), generator=generator, device=device, dtype=torch.float32)


def uniform_times(steps: int) -> list[float]:
    """The grid of Alg. 2: 1, (N-1)/N, ..., 0."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return [i / steps for i in range(steps, -1, -1)]


def _check_grid(times: Sequence[float]) -> list[float]:
    times = [float(v) for v in times]
    if len(times) < 2 or any(a <= b for a, b in zip(times, times[1:])):
        raise ValueError(f"a time grid must have >= 2 strictly decreasing points, got {times}")
    return times


def consistency_sample(
    net,
    noise: Tensor,
    prepared: Prepared,
    steps: int = 1,
    times: Sequence[float] | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> Tensor:
    """Algorithm 2: x <- x + (s - t) u(x, t, s, c) over a descending grid (default i/N).

    One network evaluation per step; with the exact average velocity each step is exact.
    """
    grid = _check_grid(times if times is not None else uniform_times(steps))
    x = noise.float()
    b = x.shape[0]
    for t_i, s_i in zip(grid[:-1], grid[1:]):
        t = torch.full((b,), t_i, device=x.device)
        s = torch.full((b,), s_i, device=x.device)
        x = jump(x, t, s, call_network(net, x, t, s, prepared, autocast_dtype))  # Alg. 2 line 4
    return x


def euler_cfg_sample(
    net,
    noise: Tensor,
    prepared: Prepared,
    prepared_null: Prepared | None = None,
    steps: int = 25,
    cfg_scale: float = 1.0,
    guidance_t_max: float = 1.0,
    times: Sequence[float] | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> Tensor:
    """Euler on v = w v(x, t | c) + (1 - w) v(x, t | phi) (Eq. 15), using u(x, t, t) = v(x, t).

    Guidance applies at steps whose t <= ``guidance_t_max``; above it the conditional field
    alone is used and the unconditional pass is skipped. ``steps=25, cfg_scale=4.5`` with
    guidance everywhere is MMAudio's 25 x 2 NFE sampler.
    """
    grid = _check_grid(times if times is not None else uniform_times(steps))
    x = noise.float()
    b = x.shape[0]
    guided = cfg_scale != 1.0
    if guided and prepared_null is None:
        raise ValueError("cfg_scale != 1 needs prepared_null (the prepared null conditions)")
    null: Prepared = prepared_null if prepared_null is not None else {}
    for t_i, s_i in zip(grid[:-1], grid[1:]):
        t = torch.full((b,), t_i, device=x.device)
        s = torch.full((b,), s_i, device=x.device)
        v = call_network(net, x, t, t, prepared, autocast_dtype)
        if guided and t_i <= guidance_t_max:
            v_null = call_network(net, x, t, t, null, autocast_dtype)
            v = cfg_scale * v + (1 - cfg_scale) * v_null  # Eq. 15
        x = jump(x, t, s, v)
    return x


class NegativeGuided(nn.Module):
    """u = (1 + g) u(x, t, s | c) - g u(x, t, s | negative): a negative prompt on top of a
    consistency model's baked-in guidance (Eq. 15's form, two network evaluations per step)."""

    def __init__(self, net, negative: Prepared, scale: float):
        super().__init__()
        self.net, self.negative, self.scale = net, negative, scale

    def forward(self, x: Tensor, t: Tensor, s: Tensor, prepared: Prepared) -> Tensor:
        return (1 + self.scale) * self.net(x, t, s, prepared) - self.scale * self.net(x, t, s, self.negative)


SAMPLER_KINDS = ("consistency", "euler")


@dataclass(frozen=True)
class SamplerOptions:
    """How to sample. ``consistency``: Alg. 2 with ``steps`` jumps; a negative prompt (``null``
    given to :func:`sample`) adds ``negative_scale`` of extra guidance. ``euler``: Euler + CFG
    (Eq. 15) at ``cfg_scale`` for steps with t <= ``guidance_t_max``."""

    kind: str = "consistency"
    steps: int = 1
    cfg_scale: float = 4.5
    guidance_t_max: float = 1.0
    negative_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in SAMPLER_KINDS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLER_KINDS)}, got {self.kind!r}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not 0.0 <= self.guidance_t_max <= 1.0:
            raise ValueError(f"guidance_t_max must be in [0, 1], got {self.guidance_t_max}")

    def nfe(self, negative: bool = False) -> int:
        """Network evaluations per sample."""
        if self.kind == "consistency":
            return self.steps * (2 if negative else 1)
        if self.cfg_scale == 1.0:
            return self.steps
        guided = sum(1 for t in uniform_times(self.steps)[:-1] if t <= self.guidance_t_max)
        return self.steps + guided


def sample(
    net,
    noise: Tensor,
    prepared: Prepared,
    null: Prepared | None,
    options: SamplerOptions,
    autocast_dtype: torch.dtype | None = None,
) -> Tensor:
    """x_0 from x_1 = ``noise``. ``null``: the conditions guidance pushes away from (Euler: the
    null or negative conditions, required when cfg_scale != 1; consistency: a negative prompt's
    conditions, or None for the baked-in guidance alone)."""
    if options.kind == "consistency":
        model = NegativeGuided(net, null, options.negative_scale) if null is not None else net
        return consistency_sample(model, noise, prepared, steps=options.steps, autocast_dtype=autocast_dtype)
    return euler_cfg_sample(
        net, noise, prepared, null, steps=options.steps, cfg_scale=options.cfg_scale,
        guidance_t_max=options.guidance_t_max, autocast_dtype=autocast_dtype,
    )  # fmt: skip
