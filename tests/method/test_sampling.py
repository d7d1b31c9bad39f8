"""Samplers: grids, seeds, fp32 state, NFE counts and CFG arithmetic."""

import pytest
import torch

from soundvcm.sampling import (
    ClassifierFreeGuided,
    ConsistencyOptions,
    EulerOptions,
    consistency_sample,
    euler_sample,
    initial_noise,
    sample,
    uniform_times,
)


class _Counter(torch.nn.Module):
    """u = a constant per branch; counts evaluations and records (t, s)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, t, s, prepared):
        self.calls.append((t[0].item(), s[0].item()))
        return prepared["v"].expand_as(x).to(torch.bfloat16)


def test_uniform_grid_and_validation():
    assert uniform_times(4) == [1.0, 0.75, 0.5, 0.25, 0.0]
    with pytest.raises(ValueError):
        uniform_times(0)
    with pytest.raises(ValueError):
        consistency_sample(_Counter(), torch.zeros(1, 2), {"v": torch.ones(1, 2)}, ConsistencyOptions(times=(0.0, 1.0)))


def test_consistency_sampler_steps_and_fp32():
    net = _Counter()
    out = consistency_sample(net, torch.zeros(2, 3), {"v": torch.ones(2, 3)}, ConsistencyOptions(steps=4))
    assert net.calls == [(1.0, 0.75), (0.75, 0.5), (0.5, 0.25), (0.25, 0.0)]  # Alg. 2, one NFE per step
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, -torch.ones(2, 3))  # x <- x - (1/N) u, four times


def test_euler_cfg_counts_and_window():
    net = _Counter()
    cond, null = {"v": torch.full((1, 2), 2.0)}, {"v": torch.full((1, 2), 1.0)}
    options = EulerOptions(steps=4, cfg_scale=3.0, guidance_t_max=0.6)
    out = sample(net, torch.zeros(1, 2), cond, options, null)
    # t = 1.0 and 0.75 are outside the window: 1 NFE each; t = 0.5 and 0.25: 2 NFE each
    assert len(net.calls) == 6 == options.nfe()
    # CFG is a model wrapper: the same sampler on ClassifierFreeGuided gives the same result
    again = euler_sample(ClassifierFreeGuided(_Counter(), null, 3.0, 0.6), torch.zeros(1, 2), cond, options)
    assert torch.equal(again, out)
    guided = 3.0 * 2.0 + (1 - 3.0) * 1.0
    torch.testing.assert_close(out, torch.full((1, 2), -(0.5 * 2.0 + 0.5 * guided)))
    with pytest.raises(ValueError, match="prepare_null"):
        sample(net, torch.zeros(1, 2), cond, EulerOptions(steps=2, cfg_scale=2.0))


def test_seeded_noise_reproduces():
    a = initial_noise((3, 4), seed=7)
    b = initial_noise((3, 4), seed=7)
    g = torch.Generator().manual_seed(7)
    assert torch.equal(a, b) and torch.equal(a, initial_noise((3, 4), generator=g))
    assert not torch.equal(a, initial_noise((3, 4), seed=8))


def test_euler_converges_to_exact_endpoint(flow, guidance):
    """Euler + CFG on the exact conditional field reaches the exact guided endpoint."""
    from soundvcm.exact_flow import ExactAverageVelocity

    exact = ExactAverageVelocity(flow, guidance=None)  # a flow-matching model: the conditional field
    labels = torch.tensor([0, 1, 2, 0])
    noise = torch.randn(4, 3, dtype=torch.float64)
    cond = exact.prepare(exact.one_hot(labels))
    null = exact.prepare(exact.null_conditions(4))
    endpoint = flow.integrate(noise, 1.0, 0.0, labels, guidance, steps=128)  # RK4: error ~1e-8, far below Euler's
    errs = []
    for steps in (10, 40, 160):
        out = sample(exact, noise, cond, EulerOptions(steps=steps, cfg_scale=4.0, guidance_t_max=0.8), null)
        errs.append((out.double() - endpoint).abs().max().item())
    assert errs[1] < errs[0] / 2.5 and errs[2] < errs[1] / 2.5, errs  # first order: ~4x smaller per 4x steps
