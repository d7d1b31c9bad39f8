"""Samplers as pure functions with one signature, their typed options, and guidance as model wrappers.

k-diffusion's shape: every sampler is ``sample_fn(model, noise, prepared, options) -> x_0``; the
model is anything called as ``model(x, t, s, prepared)`` (the network, or a wrapper around it);
each sampler's options are a frozen dataclass registered beside its function in
:data:`SAMPLERS`:

* ``consistency`` (:class:`ConsistencyOptions`): Algorithm 2, ``steps`` jumps of the average
  velocity; a negative prompt adds ``negative_scale`` of extra guidance (:class:`NegativeGuided`).
* ``euler`` (:class:`EulerOptions`): Euler on u(x, t, t) = v(x, t) with classifier-free guidance
  at ``cfg_scale`` for steps with t <= ``guidance_t_max`` (:class:`ClassifierFreeGuided`, Eq. 15);
  a negative prompt replaces CFG's null condition.

Both take ``prompt_scale`` (:class:`PromptGuided`, issue 33): guidance along the caption alone,
u + g (u(x | video, caption) - u(x | the same video, no caption)), one more evaluation per step.
CFG's null branch (Eq. 15) moves the output away from "no video and no text" and so amplifies the
picture and the caption together; when they disagree (a wooden block prompted to ring like metal)
the picture wins. The difference above holds the picture fixed, so it pushes only towards what the
caption adds: the prompt chooses the sound, the video still places it.

:func:`sample` is the one entry point (the pipeline, the trainer's samples and the benchmarks call
it): the options' own type picks the sampler and the guidance wrapper, so the kind is decided in
one place, by the options object the caller built (:func:`options_for` from a ``--sampler`` name).
All samplers integrate from t = 1 (noise) to t = 0 (data) in the paper's convention
(:mod:`soundvcm.flow`) and keep their state in fp32; precision is the network call's business
(:class:`soundvcm.network.protocol.Autocast`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from soundvcm.conditions import Prepared
from soundvcm.flow import jump


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


# ----- options --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConsistencyOptions:
    """Alg. 2 over ``times`` (default the uniform grid i / ``steps``); ``negative_scale``: the extra
    guidance away from a negative prompt, when one is given."""

    steps: int = 1
    negative_scale: float = 1.0
    times: tuple[float, ...] | None = None
    prompt_scale: float = 0.0  # PromptGuided's g (0: off)
    kind: ClassVar[str] = "consistency"

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        _check_prompt_scale(self.prompt_scale)

    def grid(self) -> list[float]:
        return _check_grid(self.times if self.times is not None else uniform_times(self.steps))

    needs_null: ClassVar[bool] = False  # its guidance is baked in: no null conditions to prepare

    def nfe(self, negative: bool = False, prompted: bool = False) -> int:
        """Network evaluations per sample: one per step, one more with a negative prompt, one more
        with prompt guidance on a prompted input."""
        return (len(self.grid()) - 1) * (1 + negative + (prompted and self.prompt_scale != 0))


@dataclass(frozen=True)
class EulerOptions:
    """Euler over ``times`` (default i / ``steps``) with CFG at ``cfg_scale`` for steps with t <=
    ``guidance_t_max``. ``steps=25, cfg_scale=4.5`` with guidance everywhere is MMAudio's 25 x 2 NFE."""

    steps: int = 25
    cfg_scale: float = 4.5
    guidance_t_max: float = 1.0
    times: tuple[float, ...] | None = None
    prompt_scale: float = 0.0  # PromptGuided's g (0: off)
    kind: ClassVar[str] = "euler"

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not 0.0 <= self.guidance_t_max <= 1.0:
            raise ValueError(f"guidance_t_max must be in [0, 1], got {self.guidance_t_max}")
        _check_prompt_scale(self.prompt_scale)

    def grid(self) -> list[float]:
        return _check_grid(self.times if self.times is not None else uniform_times(self.steps))

    @property
    def guided(self) -> bool:
        return self.cfg_scale != 1.0

    @property
    def needs_null(self) -> bool:
        """CFG needs the network's prepared null conditions (unless a negative prompt stands in)."""
        return self.guided

    def nfe(self, negative: bool = False, prompted: bool = False) -> int:
        """Network evaluations per sample: one per step, plus one per guided step (a negative prompt
        takes the null condition's place, so it costs nothing more), plus one per step with prompt
        guidance on a prompted input."""
        grid = self.grid()
        steps = len(grid) - 1
        extra = steps if prompted and self.prompt_scale != 0 else 0
        if not self.guided:
            return steps + extra
        return steps + extra + sum(1 for t in grid[:-1] if t <= self.guidance_t_max)


def _check_prompt_scale(scale: float) -> None:
    if not 0.0 <= scale <= 20.0:
        raise ValueError(f"prompt_scale must be in [0, 20], got {scale}")


SamplerOptions = ConsistencyOptions | EulerOptions


# ----- guidance wrappers ------------------------------------------------------------------------------
class NegativeGuided(nn.Module):
    """u = (1 + g) u(x, t, s | c) - g u(x, t, s | negative): a negative prompt on top of a
    consistency model's baked-in guidance (Eq. 15's form, two network evaluations per step)."""

    def __init__(self, net, negative: Prepared, scale: float):
        super().__init__()
        self.net, self.negative, self.scale = net, negative, scale

    def forward(self, x: Tensor, t: Tensor, s: Tensor, prepared: Prepared) -> Tensor:
        return (1 + self.scale) * self.net(x, t, s, prepared) - self.scale * self.net(x, t, s, self.negative)


class PromptGuided(nn.Module):
    """u = u(x, t, s | c) + g (u(x, t, s | c) - u(x, t, s | c without its caption)) (module docstring).

    The branch of the guidance around it (CFG's null, a negative prompt: ``passthrough``) is passed
    to the network unchanged, so Euler's CFG reads w PG(v_c) + (1 - w) v_null."""

    def __init__(self, net, uncaptioned: Prepared, scale: float, passthrough: Prepared | None = None):
        super().__init__()
        self.net, self.uncaptioned, self.scale, self.passthrough = net, uncaptioned, scale, passthrough

    def forward(self, x: Tensor, t: Tensor, s: Tensor, prepared: Prepared) -> Tensor:
        u = self.net(x, t, s, prepared).float()
        if prepared is self.passthrough:
            return u
        return u + self.scale * (u - self.net(x, t, s, self.uncaptioned).float())


class ClassifierFreeGuided(nn.Module):
    """v = w v(x, t | c) + (1 - w) v(x, t | null) (Eq. 15) where t <= ``t_max``; above it the
    conditional field alone, and the null pass is skipped."""

    def __init__(self, net, null: Prepared, scale: float, t_max: float = 1.0):
        super().__init__()
        self.net, self.null, self.scale, self.t_max = net, null, scale, t_max

    def forward(self, x: Tensor, t: Tensor, s: Tensor, prepared: Prepared) -> Tensor:
        v = self.net(x, t, s, prepared).float()
        if float(t.max()) > self.t_max + 1e-6:  # fp32 times: 0.8 is 0.80000001
            return v
        return self.scale * v + (1 - self.scale) * self.net(x, t, s, self.null).float()  # Eq. 15


# ----- samplers ---------------------------------------------------------------------------------------
def consistency_sample(model, noise: Tensor, prepared: Prepared, options: ConsistencyOptions) -> Tensor:
    """Algorithm 2: x <- x + (s - t) u(x, t, s, c) over a descending grid. One evaluation per step;
    with the exact average velocity each step is exact."""
    x = noise.float()
    b = x.shape[0]
    grid = options.grid()
    for t_i, s_i in zip(grid[:-1], grid[1:]):
        t = torch.full((b,), t_i, device=x.device)
        s = torch.full((b,), s_i, device=x.device)
        x = jump(x, t, s, model(x, t, s, prepared).float())  # Alg. 2 line 4
    return x


def euler_sample(model, noise: Tensor, prepared: Prepared, options: EulerOptions) -> Tensor:
    """Euler on the instantaneous velocity u(x, t, t) = v(x, t) of ``model`` (guidance, if any, is
    the model's: :class:`ClassifierFreeGuided`)."""
    x = noise.float()
    b = x.shape[0]
    grid = options.grid()
    for t_i, s_i in zip(grid[:-1], grid[1:]):
        t = torch.full((b,), t_i, device=x.device)
        s = torch.full((b,), s_i, device=x.device)
        x = jump(x, t, s, model(x, t, t, prepared).float())
    return x


def _negative(net, options: ConsistencyOptions, null: Prepared | None):
    return NegativeGuided(net, null, options.negative_scale) if null is not None else net


def _cfg(net, options: EulerOptions, null: Prepared | None):
    if not options.guided:  # w = 1: the conditional field alone (a negative prompt has no effect)
        return net
    if null is None:
        raise ValueError("cfg_scale != 1 needs the prepared null conditions (net.prepare_null)")
    return ClassifierFreeGuided(net, null, options.cfg_scale, options.guidance_t_max)


@dataclass(frozen=True)
class Sampler:
    """A registered sampler: its options type, its function, the guidance wrapper its options ask
    for (``guide(net, options, null)``), and what ``null`` means for it."""

    options: type
    sample: Callable[..., Tensor]
    guide: Callable[..., Any]
    null: str


SAMPLERS: dict[str, Sampler] = {
    "consistency": Sampler(ConsistencyOptions, consistency_sample, _negative, "a negative prompt's conditions"),
    "euler": Sampler(EulerOptions, euler_sample, _cfg, "CFG's null conditions, or a negative prompt's"),
}
SAMPLER_KINDS = tuple(SAMPLERS)


def sample(
    net,
    noise: Tensor,
    prepared: Prepared,
    options: SamplerOptions,
    null: Prepared | None = None,
    uncaptioned: Prepared | None = None,
) -> Tensor:
    """x_0 from x_1 = ``noise`` with the sampler ``options`` belongs to. ``null``: the conditions
    guidance pushes away from (a consistency model: a negative prompt's, or None for its baked-in
    guidance alone; Euler: CFG's null conditions or a negative prompt's, needed when cfg_scale != 1).
    ``uncaptioned``: ``prepared`` with its caption replaced by the null text, for prompt guidance
    (None, or ``options.prompt_scale`` 0: none)."""
    entry = SAMPLERS[options.kind]
    if uncaptioned is not None and options.prompt_scale != 0:
        net = PromptGuided(net, uncaptioned, options.prompt_scale, passthrough=null)
    return entry.sample(entry.guide(net, options, null), noise, prepared, options)


class ForeignSetting(ValueError):
    """A setting given to a sampler that does not have it (``setting``; ``kind``: that sampler)."""

    def __init__(self, setting: str, kind: str, owners: list[str]):
        super().__init__(f"{setting} is a setting of the {' or '.join(owners) or 'no'} sampler, not of {kind}")
        self.setting, self.kind, self.owners = setting, kind, owners


def options_for(kind: str, **settings: Any) -> SamplerOptions:
    """The ``kind`` sampler's options with ``settings`` (None values left at the defaults); a setting
    the sampler does not have is a ValueError naming it and the sampler it belongs to."""
    if kind not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLER_KINDS)}, got {kind!r}")
    cls = SAMPLERS[kind].options
    names = {f.name for f in fields(cls)}
    given = {k: v for k, v in settings.items() if v is not None}
    foreign = [k for k in given if k not in names]
    if foreign:
        owners = [other for other, e in SAMPLERS.items() if foreign[0] in {f.name for f in fields(e.options)}]
        raise ForeignSetting(foreign[0], kind, owners)
    return cls(**given)


def with_settings(options: SamplerOptions, **settings: Any) -> SamplerOptions:
    """``options`` with the given (non-None) settings replaced; foreign settings are refused."""
    given = {k: v for k, v in settings.items() if v is not None}
    options_for(options.kind, **given)  # names every foreign setting
    return replace(options, **given)


def options_from_dict(data: dict[str, Any]) -> SamplerOptions:
    """Options saved in a spec: ``{"kind": ..., settings}``; settings of the other sampler (specs
    written before typed options held every field) are dropped."""
    data = dict(data)
    kind = data.pop("kind", "consistency")
    names = {f.name for f in fields(SAMPLERS[kind].options)} if kind in SAMPLERS else set()
    return options_for(kind, **{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in names})


def options_to_dict(options: SamplerOptions) -> dict[str, Any]:
    return {"kind": options.kind, **{f.name: getattr(options, f.name) for f in fields(options)}}
