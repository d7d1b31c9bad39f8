"""The analytic bed itself: closed-form velocities, exact flows, sliced W2."""

import torch

from soundvcm.exact_flow import GaussianMixtureFlow, Guidance, MixtureSpec, classwise_sw2, sliced_wasserstein2
from soundvcm.flow import interpolate, path_velocity


def test_velocity_matches_monte_carlo(flow):
    """v(x, t | c) = E[eps - x0 | x_t, c], checked by importance-weighted Monte Carlo."""
    g = torch.Generator().manual_seed(0)
    n, t = 400_000, 0.6
    labels = torch.full((n,), 1)
    x0 = flow.sample_data(labels, g)
    query = flow.means[1, 0] * 0.4 + 0.1
    # p(x_t = query | x0) is Gaussian in eps; weight each x0 by it (exact posterior sampling)
    logw = -((query - (1 - t) * x0) / t).square().sum(1) / 2
    w = torch.softmax(logw, 0)
    eps_q = (query - (1 - t) * x0) / t
    mc = (w[:, None] * path_velocity(x0, eps_q)).sum(0)
    exact = flow.velocity(query[None], torch.tensor([t]), torch.tensor([1]))[0]
    torch.testing.assert_close(exact, mc, atol=2e-2, rtol=0)


def test_velocity_limits(flow):
    x = torch.randn(6, 3, dtype=torch.float64)
    # t = 0: v = E[eps] - x = -x ; t = 1: v = x - E[x0 | c]
    torch.testing.assert_close(flow.velocity(x, torch.zeros(6), torch.zeros(6, dtype=torch.long)), -x)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    torch.testing.assert_close(flow.velocity(x, torch.ones(6), labels), x - flow.means[labels].mean(1))


def test_rk4_converges(flow):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(8, 3, generator=g, dtype=torch.float64)
    labels = torch.arange(8) % 3
    guide = Guidance(4.0, 0.8)
    ref = flow.integrate(x, 1.0, 0.0, labels, guide, steps=1024)
    coarse = flow.integrate(x, 1.0, 0.0, labels, guide, steps=256)
    assert (coarse - ref).abs().max() < 1e-7


def test_average_velocity_is_exact_jump_and_additive(flow, guidance):
    """u(x_t,t,s)(s-t) = u(x_t,t,l)(l-t) + u(x_l,l,s)(s-l)  (Eq. 6)."""
    x = torch.randn(5, 3, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 1, 0])
    t, l, s = torch.full((5,), 0.95), torch.full((5,), 0.6), torch.full((5,), 0.1)
    u_ts = flow.average_velocity(x, t, s, labels, guidance)
    u_tl = flow.average_velocity(x, t, l, labels, guidance)
    x_l = x + (l - t)[:, None] * u_tl
    u_ls = flow.average_velocity(x_l, l, s, labels, guidance)
    lhs = u_ts * (s - t)[:, None]
    rhs = u_tl * (l - t)[:, None] + u_ls * (s - l)[:, None]
    torch.testing.assert_close(lhs, rhs, atol=1e-7, rtol=0)  # RK4 at 256 steps: ~2e-8
    # u(x, t, t) = v(x, t)
    torch.testing.assert_close(
        flow.average_velocity(x, t, t, labels, guidance), flow.guided_velocity(x, t, labels, guidance)
    )


def test_guided_field_only_inside_window(flow, guidance):
    x = torch.randn(4, 3, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0])
    t = torch.tensor([0.9, 0.81, 0.8, 0.3], dtype=torch.float64)
    v_c = flow.velocity(x, t, labels)
    v_u = flow.velocity(x, t, None)
    got = flow.guided_velocity(x, t, labels, guidance)
    torch.testing.assert_close(got[:2], v_c[:2])
    torch.testing.assert_close(got[2:], 4 * v_c[2:] - 3 * v_u[2:])


def test_sliced_w2_known_answers():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 2, generator=g, dtype=torch.float64)
    assert sliced_wasserstein2(a, a.clone()) == 0.0
    # A pure shift by m: every 1-D projection shifts by <m, dir>; E<m,dir>^2 = |m|^2 / d.
    m = torch.tensor([3.0, 4.0], dtype=torch.float64)
    got = sliced_wasserstein2(a, a + m, num_projections=4000, generator=g)
    assert abs(got - (25 / 2) ** 0.5) < 0.1
    labels = torch.arange(2).repeat_interleave(2000)
    assert classwise_sw2(a, a, labels) == 0.0


def test_mixture_is_seeded():
    a = GaussianMixtureFlow(MixtureSpec(dim=16, seed=3)).means
    b = GaussianMixtureFlow(MixtureSpec(dim=16, seed=3)).means
    assert torch.equal(a, b)
    x0 = interpolate(a[0, :1], a[0, :1], torch.tensor([0.5]))
    assert x0.shape == (1, 16)


# ----- the adaptive weight's fixed point on the t = s rows (issue 11) ------------------------------
def test_velocity_draws_average_to_the_exact_velocity():
    from soundvcm.exact_flow import GaussianMixtureFlow, MixtureSpec

    flow = GaussianMixtureFlow(MixtureSpec(dim=2, seed=0))
    g = torch.Generator().manual_seed(0)
    for t, label in ((0.3, 1), (0.7, None), (0.95, 2)):
        x = torch.tensor([0.2, -0.4], dtype=torch.float64)
        lab = None if label is None else torch.tensor([label])
        draws = flow.velocity_draws(x, t, lab, 40_000, g)
        exact = flow.velocity(x[None], torch.tensor([t]), lab)[0]
        se = draws.std(0) / 200  # standard error of the mean of 40k draws
        assert ((draws.mean(0) - exact).abs() < 5 * se + 1e-9).all(), (t, draws.mean(0), exact)


def test_irls_fixed_point_is_the_mean_at_p0_and_off_it_at_p1():
    """At D = 2, the minimiser of the p = 1 adaptive loss is not the velocity (posterior mean); at
    p = 0 it is. A point between two components of one class, where the posterior is bimodal."""
    from soundvcm.exact_flow import GaussianMixtureFlow, MixtureSpec, irls_fixed_point

    flow = GaussianMixtureFlow(MixtureSpec(dim=2, seed=0))
    t = 0.5
    mu = flow.means[0]  # class 0's two components
    x = (1 - t) * (0.6 * mu[0] + 0.4 * mu[1])  # nearer component 0: unequal posterior weights
    label = torch.tensor([0])
    draws = flow.velocity_draws(x, t, label, 20_000, torch.Generator().manual_seed(1))
    exact = flow.velocity(x[None], torch.tensor([t]), label)[0]
    p0 = irls_fixed_point(draws, p=0.0)
    p1 = irls_fixed_point(draws, p=1.0)
    spread = draws.std(0).norm()
    assert (p0 - exact).norm() < 0.02 * spread  # the mean, up to Monte-Carlo error
    assert (p1 - exact).norm() > 0.15 * spread  # measurably off: pulled towards a mode
