"""The paper's time convention: t = 1 is noise, v = eps - x0, sampling runs 1 -> 0."""

import torch

from soundvcm.flow import from_mmaudio_time, from_mmaudio_velocity, interpolate, jump, path_velocity
from soundvcm.sampling import ConsistencyOptions, EulerOptions, consistency_sample, euler_sample


def test_interpolation_endpoints_and_velocity():
    x0, eps = torch.randn(5, 4), torch.randn(5, 4)
    assert torch.equal(interpolate(x0, eps, torch.zeros(5)), x0)  # t = 0 is data
    assert torch.equal(interpolate(x0, eps, torch.ones(5)), eps)  # t = 1 is noise
    t = torch.rand(5)
    h = 1e-3
    fd = (interpolate(x0, eps, t + h) - interpolate(x0, eps, t - h)) / (2 * h)
    torch.testing.assert_close(fd, path_velocity(x0, eps), atol=1e-3, rtol=1e-3)  # v = dx_t/dt = eps - x0


def test_jump_moves_backwards_in_time():
    x, u = torch.zeros(2, 3), torch.ones(2, 3)
    out = jump(x, torch.tensor([1.0, 0.5]), torch.tensor([0.0, 0.25]), u)
    torch.testing.assert_close(out, torch.tensor([[-1.0] * 3, [-0.25] * 3]))


def test_mmaudio_flip():
    # MMAudio: x = (1 - t_m) eps + t_m x0, v_m = x0 - eps; ours: t = 1 - t_m, v = -v_m.
    x0, eps, t_m = torch.randn(3, 2), torch.randn(3, 2), torch.rand(3)
    x_m = (1 - t_m[:, None]) * eps + t_m[:, None] * x0
    torch.testing.assert_close(x_m, interpolate(x0, eps, from_mmaudio_time(t_m)))
    torch.testing.assert_close(from_mmaudio_velocity(x0 - eps), path_velocity(x0, eps))


def test_exact_samplers_carry_noise_to_data(flow, exact):
    """Integrating the exact field from t = 1 lands on the data: class means are recovered."""
    labels = torch.arange(3).repeat_interleave(400)
    noise = torch.randn(labels.shape[0], 3, dtype=torch.float64)
    unguided = type(exact)(flow, None, steps=64)
    prepared = unguided.prepare(unguided.one_hot(labels))
    out = consistency_sample(unguided, noise, prepared, ConsistencyOptions(steps=1)).double()
    for c in range(3):
        torch.testing.assert_close(out[labels == c].mean(0), flow.means[c].mean(0), atol=0.12, rtol=0)
    # the Euler sampler on the same field agrees with the exact endpoint as steps grow
    euler = euler_sample(unguided, noise[:50], select(prepared, 50), EulerOptions(steps=200, cfg_scale=1.0)).double()
    assert (euler - out[:50]).abs().max() < 0.05


def select(prepared, n):
    return {k: v[:n] for k, v in prepared.items()}
