"""``soundvcm bench toy --fixed-point``: where the adaptive weight settles on the t = s rows.

On a t = s row VCM regresses u(x_t, t, t) onto the mixed velocity (Eq. 16)

    v_mix = m (w (eps - x0) + (1 - w) v_uncond) + (1 - m) v_guided,

whose expectation given x_t is the guided velocity v_guided (Eq. 15). With the adaptive weight
w(MSE) = sg(1 / (MSE + eps)^p) (Eq. 11) the population optimum is no longer that expectation but
the fixed point of iteratively reweighted least squares over the posterior of v_mix
(:func:`soundvcm.exact_flow.irls_fixed_point`): at p = 1 it is pulled towards a mode of the
posterior. This module measures it without any network:

* **the field** for one mixture at d = 2: the exact v_guided against the p = 1 fixed point at
  x_t drawn from the data (their relative error), and a map of the bias over the x_t plane (PNG);
* **the dimension**: a two-mode posterior (weights 0.7 / 0.3, modes a fixed distance apart) plus
  isotropic per-coordinate spread, embedded in D dimensions. The per-row MSE averages D
  coordinates; as D grows its relative spread shrinks like sqrt(2 / D), the weights of all draws
  become equal, and the fixed point returns to the mean. Audio latents have D = 250 x 20 = 5000.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from soundvcm.exact_flow import GaussianMixtureFlow, Guidance, MixtureSpec, irls_fixed_point


def mixed_velocity_draws(
    flow: GaussianMixtureFlow, x: torch.Tensor, t: float, label: int, guidance: Guidance, mix: float, n: int, g
) -> torch.Tensor:
    """n draws of v_mix (Eq. 16) at x_t = x for class ``label``, with exact v_uncond and v_guided."""
    lab = torch.tensor([label])
    v_c = flow.velocity_draws(x, t, lab, n, g)  # per-sample eps - x0 given x_t and the class
    v_u = flow.velocity(x[None], torch.tensor([t]), None)[0]
    v_g = flow.guided_velocity(x[None], torch.tensor([t]), lab, guidance)[0]
    w = guidance.scale if t <= guidance.t_max else 1.0
    return mix * (w * v_c + (1 - w) * v_u) + (1 - mix) * v_g


def field_study(seed: int = 0, t: float = 0.5, points: int = 60, draws: int = 4000, mix: float = 0.25, p: float = 1.0):
    """Exact guided velocities and p-weighted fixed points at ``points`` x_t from the data, d = 2."""
    flow = GaussianMixtureFlow(MixtureSpec(dim=2, seed=seed))
    guidance = Guidance()
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, flow.spec.num_classes, (points,), generator=g)
    x0 = flow.sample_data(labels, g)
    xs = (1 - t) * x0 + t * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    exact, fixed = [], []
    for x, label in zip(xs, labels.tolist()):
        d = mixed_velocity_draws(flow, x, t, label, guidance, mix, draws, g)
        exact.append(flow.guided_velocity(x[None], torch.tensor([t]), torch.tensor([label]), guidance)[0])
        fixed.append(irls_fixed_point(d, p))
    exact_t, fixed_t = torch.stack(exact), torch.stack(fixed)
    rel = float((fixed_t - exact_t).square().sum() / exact_t.square().sum())
    return {"x": xs, "labels": labels, "exact": exact_t, "fixed": fixed_t, "relative_sq_error": rel, "t": t}


def dimension_study(dims=(2, 4, 16, 64, 256, 1024, 5000), draws: int = 4000, p: float = 1.0, seed: int = 0):
    """|fixed point - mean| / |mode separation| for a 0.7 / 0.3 two-mode posterior in D dimensions."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for d in dims:
        modes = torch.zeros(2, d, dtype=torch.float64)
        modes[1, 0] = 3.0  # the modes differ along one direction, 3 spreads apart
        which = (torch.rand(draws, generator=g) < 0.3).long()
        v = modes[which] + torch.randn(draws, d, generator=g, dtype=torch.float64)
        bias = float((irls_fixed_point(v, p) - v.mean(0)).norm() / 3.0)
        rows.append({"dim": d, "bias_over_separation": bias})
    return rows


def bias_map(seed: int = 0, t: float = 0.5, label: int = 0, grid: int = 31, draws: int = 3000, mix: float = 0.25):
    """|fixed point (p = 1) - exact guided velocity| on a grid of x_t, and the class's x_t density."""
    flow = GaussianMixtureFlow(MixtureSpec(dim=2, seed=seed))
    guidance = Guidance()
    g = torch.Generator().manual_seed(seed + 1)
    lim = float((1 - t) * flow.means.abs().max() + 2 * t)
    axis = torch.linspace(-lim, lim, grid, dtype=torch.float64)
    bias = torch.zeros(grid, grid, dtype=torch.float64)
    density = torch.zeros(grid, grid, dtype=torch.float64)
    mus = (1 - t) * flow.means[label]  # x_t | class: equal mixture of N((1-t) mu, ((1-t)^2 s^2 + t^2) I)
    var = (1 - t) ** 2 * flow.std**2 + t**2
    for i, yv in enumerate(axis):
        for j, xv in enumerate(axis):
            x = torch.stack([xv, yv])
            d = mixed_velocity_draws(flow, x, t, label, guidance, mix, draws, g)
            exact = flow.guided_velocity(x[None], torch.tensor([t]), torch.tensor([label]), guidance)[0]
            bias[i, j] = (irls_fixed_point(d, 1.0) - exact).norm()
            density[i, j] = torch.exp(-(x - mus).square().sum(-1) / (2 * var)).mean()
    return {"axis": axis, "bias": bias, "density": density, "t": t, "label": label}


def field_plot(path: Path, study: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axis = study["axis"].numpy()
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    mesh = ax.pcolormesh(axis, axis, study["bias"].numpy(), cmap="magma", shading="auto")
    fig.colorbar(mesh, ax=ax, label="|fixed point of the p = 1 weight - exact guided velocity|")
    ax.contour(axis, axis, study["density"].numpy(), levels=5, colors="white", linewidths=0.7)
    ax.set_title(
        f"t = s rows, class {study['label']}, t = {study['t']}: bias of the adaptive weight\n"
        "(white: density of x_t; the bias sits between the class's components)",
        fontsize=9,
    )
    ax.set_xlabel("x_t[0]")
    ax.set_ylabel("x_t[1]")
    ax.set_aspect("equal")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def run_fixed_point(out_dir: Path, seed: int = 0) -> str:
    """Both studies; returns markdown and writes ``toy_fixed_point.png``."""
    lines = ["| t | p | relative squared error of the fixed point vs the exact guided velocity |", "|---|---|---|"]
    for t in (0.3, 0.5, 0.7):
        for p in (0.0, 1.0):
            s = field_study(seed=seed, t=t, p=p)
            lines.append(f"| {t} | {p:g} | {s['relative_sq_error']:.3f} |")
    plot = field_plot(Path(out_dir) / "toy_fixed_point.png", bias_map(seed=seed))
    lines += ["", "| D | bias / mode separation (p = 1) | sqrt(2 / D) |", "|---|---|---|"]
    for row in dimension_study():
        lines.append(f"| {row['dim']} | {row['bias_over_separation']:.3f} | {math.sqrt(2 / row['dim']):.3f} |")
    return "\n".join(lines) + f"\n\nfield plot: {plot}"
