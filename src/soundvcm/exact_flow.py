"""Exact flows of class-conditional Gaussian mixtures: the analytic test bed (§3.1-3.3).

Data: K classes, each an equal-weight mixture of J isotropic Gaussians N(mu_kj, sigma^2 I)
in R^d. Along x_t = (1 - t) x0 + t eps (:mod:`soundvcm.flow`) each component stays Gaussian,
x_t ~ N(a mu, (a^2 sigma^2 + t^2) I) with a = 1 - t, and its velocity is linear:

    E[eps - x0 | x_t, comp] = (t - a sigma^2) / (a^2 sigma^2 + t^2) (x_t - a mu) - mu.

The marginal velocity (Eq. 1) is the posterior-weighted sum over components; conditioning on
a class (Eq. 14) restricts the components to that class, and the guided field (Eq. 15) is
w v(x, t | c) + (1 - w) v(x, t), applied for t <= t_max and the plain conditional field above.
Average velocities (Eq. 5) and ODE endpoints come from RK4 in float64 with a breakpoint at
the guidance edge, accurate to ~1e-10 at the default step count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from soundvcm.network.protocol import VelocityNet


@dataclass(frozen=True)
class MixtureSpec:
    """A seeded class-conditional Gaussian mixture."""

    dim: int = 2
    num_classes: int = 4
    components_per_class: int = 2
    std: float = 0.15
    mean_scale: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class Guidance:
    """The guidance rule of the target: scale w where t <= t_max, the conditional field above."""

    scale: float = 4.0
    t_max: float = 0.8


class GaussianMixtureFlow:
    """Closed-form velocities, exact average velocities and endpoints for a mixture."""

    def __init__(self, spec: MixtureSpec = MixtureSpec()):
        self.spec = spec
        g = torch.Generator().manual_seed(spec.seed)
        k, j, d = spec.num_classes, spec.components_per_class, spec.dim
        self.means = spec.mean_scale * torch.randn(k, j, d, generator=g, dtype=torch.float64)  # (K, J, d)
        self.std = float(spec.std)

    # ----- data -------------------------------------------------------------------------
    def sample_data(self, labels: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x0 for the given class labels (B,), float64."""
        j = self.spec.components_per_class
        comp = torch.randint(0, j, labels.shape, generator=generator)
        mu = self.means[labels, comp]
        return mu + self.std * torch.randn(mu.shape, generator=generator, dtype=torch.float64)

    def balanced_labels(self, per_class: int) -> Tensor:
        return torch.arange(self.spec.num_classes).repeat_interleave(per_class)

    # ----- velocities -------------------------------------------------------------------
    def velocity(self, x: Tensor, t: Tensor, labels: Tensor | None) -> Tensor:
        """Marginal velocity v(x, t | c) (Eq. 14) for labels, or v(x, t) (Eq. 1) for None."""
        x = x.double()
        t = torch.as_tensor(t, dtype=torch.float64).expand(x.shape[0])[:, None]  # (B, 1)
        if labels is None:
            mus = self.means.reshape(1, -1, self.spec.dim).expand(x.shape[0], -1, -1)  # (B, KJ, d)
        else:
            mus = self.means[labels]  # (B, J, d)
        a = 1.0 - t
        var = a.square() * self.std**2 + t.square()  # (B, 1)
        diff = x[:, None, :] - a[:, :, None] * mus  # (B, C, d)
        logits = -diff.square().sum(-1) / (2 * var)  # equal weights, shared variance
        post = torch.softmax(logits, dim=1)  # (B, C)
        mu_bar = torch.einsum("bc,bcd->bd", post, mus)
        gain = (t - a * self.std**2) / var
        return gain * (x - a * mu_bar) - mu_bar

    def guided_velocity(self, x: Tensor, t: Tensor, labels: Tensor | None, guidance: Guidance | None) -> Tensor:
        """w v(x,t|c) + (1-w) v(x,t) where t <= t_max (Eq. 15); v(x,t|c) elsewhere; v(x,t) if unconditional."""
        v_c = self.velocity(x, t, labels)
        if labels is None or guidance is None or guidance.scale == 1.0:
            return v_c
        t = torch.as_tensor(t, dtype=torch.float64).expand(x.shape[0])
        v_u = self.velocity(x, t, None)
        w = torch.where(t <= guidance.t_max, guidance.scale, 1.0)[:, None]
        return w * v_c + (1 - w) * v_u

    # ----- exact flow -------------------------------------------------------------------
    def integrate(
        self,
        x: Tensor,
        t: Tensor | float,
        s: Tensor | float,
        labels: Tensor | None,
        guidance: Guidance | None = None,
        steps: int = 256,
    ) -> Tensor:
        """Solve dX/dt = v(X, t) from t to s (per row) with RK4 in float64 (Eq. 2).

        The interval is split at the guidance edge t_max, where the guided field jumps, and each
        piece gets ``steps`` RK4 steps.
        """
        x = x.double()
        b = x.shape[0]
        t = torch.as_tensor(t, dtype=torch.float64).expand(b).clone()
        s = torch.as_tensor(s, dtype=torch.float64).expand(b).clone()
        edges = [t]
        if guidance is not None and labels is not None:
            edges.append(torch.minimum(torch.maximum(torch.full_like(t, guidance.t_max), s), t))
        edges.append(s)
        for start, end in zip(edges[:-1], edges[1:]):
            h = ((end - start) / steps)[:, None]
            # Evaluate just inside each piece so the field is the piece's own side of the edge.
            tau = start.clone()
            for _ in range(steps):
                k1 = self.guided_velocity(x, self._inside(tau, start, end), labels, guidance)
                k2 = self.guided_velocity(x + 0.5 * h * k1, tau + 0.5 * h[:, 0], labels, guidance)
                k3 = self.guided_velocity(x + 0.5 * h * k2, tau + 0.5 * h[:, 0], labels, guidance)
                k4 = self.guided_velocity(x + h * k3, self._inside(tau + h[:, 0], start, end), labels, guidance)
                x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
                tau = tau + h[:, 0]
        return x

    @staticmethod
    def _inside(tau: Tensor, start: Tensor, end: Tensor) -> Tensor:
        """Nudge times sitting exactly on a piece's end points 1e-12 into the piece."""
        lo = torch.minimum(start, end)
        hi = torch.maximum(start, end)
        return tau.clamp(lo + 1e-12 * (hi > lo), hi - 1e-12 * (hi > lo))

    def average_velocity(
        self,
        x: Tensor,
        t: Tensor,
        s: Tensor,
        labels: Tensor | None,
        guidance: Guidance | None = None,
        steps: int = 256,
    ) -> Tensor:
        """u(x, t, s) = (X(s) - x) / (s - t) (Eq. 5); at s = t, the velocity itself."""
        t = torch.as_tensor(t, dtype=torch.float64).expand(x.shape[0])
        s = torch.as_tensor(s, dtype=torch.float64).expand(x.shape[0])
        x = x.double()
        gap = (t - s)[:, None]
        inst = self.guided_velocity(x, t, labels, guidance)
        if not bool((gap > 0).any()):  # every row at s = t (a flow-matching query): no flow to solve
            return inst
        end = self.integrate(x, t, s, labels, guidance, steps)
        safe = torch.where(gap > 0, gap, torch.ones_like(gap))
        return torch.where(gap > 0, (x - end) / safe, inst)

    # ----- exact posteriors ---------------------------------------------------------------
    def velocity_draws(
        self, x: Tensor, t: float, labels: Tensor | None, n: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """n draws of the per-sample velocity eps - x0 given x_t = x (one point, (d,)), exactly.

        The posterior over components is ``softmax`` of their likelihoods of x; within component
        (mu, s^2 I), x0 | x_t is Gaussian with mean mu + a s^2 / (a^2 s^2 + t^2) (x_t - a mu) and
        variance s^2 t^2 / (a^2 s^2 + t^2), a = 1 - t; and eps - x0 = (x_t - x0) / t. Their mean is
        :meth:`velocity` (Eq. 1 / Eq. 14).
        """
        x = x.double().reshape(1, -1)
        a, var_x = 1.0 - t, (1.0 - t) ** 2 * self.std**2 + t**2
        mus = self.means.reshape(-1, self.spec.dim) if labels is None else self.means[labels].reshape(-1, self.spec.dim)
        logits = -(x - a * mus).square().sum(-1) / (2 * var_x)
        comp = torch.multinomial(torch.softmax(logits, 0), n, replacement=True, generator=generator)
        mean_x0 = mus[comp] + (a * self.std**2 / var_x) * (x - a * mus[comp])
        sd_x0 = math.sqrt(self.std**2 * t**2 / var_x)
        x0 = mean_x0 + sd_x0 * torch.randn(mean_x0.shape, generator=generator, dtype=torch.float64)
        return (x - x0) / t

    def target_samples(
        self, labels: Tensor, guidance: Guidance | None, generator: torch.Generator | None = None, steps: int = 256
    ) -> Tensor:
        """Exact endpoints X(0) of the (guided) ODE from X(1) ~ N(0, I): the target distribution."""
        noise = torch.randn(labels.shape[0], self.spec.dim, generator=generator, dtype=torch.float64)
        return self.integrate(noise, 1.0, 0.0, labels, guidance, steps)


def irls_fixed_point(draws: Tensor, p: float, eps: float = 0.01, iters: int = 200) -> Tensor:
    """The population minimiser, over a constant u, of E[w(MSE) MSE] with w = sg(1 / (MSE + eps)^p)
    (Eq. 11) and MSE = ||u - v||^2 / D, for v drawn as ``draws`` (N, D): where gradient descent on the
    adaptive loss settles, u = sum_i w_i v_i / sum_i w_i with w_i taken at u (iteratively
    reweighted least squares, started at the mean). p = 0 gives the mean, the flow-matching answer.
    """
    u = draws.mean(0)
    for _ in range(iters):
        w = (draws - u).square().mean(1).add(eps).pow(-p)
        u = (w[:, None] * draws).sum(0) / w.sum()
    return u


def sliced_wasserstein2(
    a: Tensor, b: Tensor, num_projections: int = 512, generator: torch.Generator | None = None
) -> float:
    """Sliced Wasserstein-2 distance between two equal-size sample sets (sqrt of the mean over
    random unit directions of the 1-D W2^2, computed by sorting)."""
    if a.shape != b.shape:
        raise ValueError(f"sample sets must have equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    a = a.double().flatten(1)
    b = b.double().flatten(1)
    dirs = torch.randn(a.shape[1], num_projections, generator=generator, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    pa = (a @ dirs).sort(dim=0).values
    pb = (b @ dirs).sort(dim=0).values
    return math.sqrt((pa - pb).square().mean().item())


def classwise_sw2(a: Tensor, b: Tensor, labels: Tensor, num_projections: int = 512, seed: int = 0) -> float:
    """Mean over classes of the SW2 between the class's samples in a and in b (same labels)."""
    vals = []
    for c in labels.unique():
        m = labels == c
        g = torch.Generator().manual_seed(seed + int(c))
        vals.append(sliced_wasserstein2(a[m], b[m], num_projections, g))
    return sum(vals) / len(vals)


class ExactAverageVelocity(VelocityNet):
    """A "network" that returns the exact guided average velocity u(x, t, s | c) of a mixture.

    It speaks the network protocol (one-hot ``"class"`` conditions, all-zero one-hot = null), so
    samplers and objectives can be checked against known answers. Differentiable in x and t,
    so it also serves forward-mode checks of the MeanFlow identity.
    """

    condition_groups = {"class": ("class",)}

    def __init__(self, flow: GaussianMixtureFlow, guidance: Guidance | None = None, steps: int = 256):
        super().__init__()
        self.flow = flow
        self.guidance = guidance
        self.steps = steps

    def one_hot(self, labels: Tensor) -> dict[str, Tensor]:
        return {"class": torch.nn.functional.one_hot(labels, self.flow.spec.num_classes).double()}

    def null_conditions(self, batch_size: int) -> dict[str, Tensor]:
        return {"class": torch.zeros(batch_size, self.flow.spec.num_classes, dtype=torch.float64)}

    def prepare(self, conditions: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"class": conditions["class"]}

    def forward(self, x: Tensor, t: Tensor, s: Tensor, prepared: dict[str, Tensor]) -> Tensor:
        onehot = prepared["class"]
        is_null = onehot.sum(-1) == 0
        labels = onehot.argmax(-1)
        out = torch.empty_like(x, dtype=torch.float64)
        for rows, lab, guidance in ((~is_null, labels, self.guidance), (is_null, None, None)):
            idx = rows.nonzero().squeeze(1)
            if idx.numel():
                out[idx] = self.flow.average_velocity(
                    x[idx], t[idx], s[idx], None if lab is None else lab[idx], guidance, self.steps
                )
        return out.to(x.dtype)
