"""Shared fixtures: a small analytic mixture, its exact network, and a tiny toy network."""

from __future__ import annotations

import pytest
import torch

from soundvcm.exact_flow import ExactAverageVelocity, GaussianMixtureFlow, Guidance, MixtureSpec
from soundvcm.network.toy import ToyNetConfig, ToyVelocityNet


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def flow() -> GaussianMixtureFlow:
    return GaussianMixtureFlow(MixtureSpec(dim=3, num_classes=3, components_per_class=2, std=0.2, seed=1))


@pytest.fixture
def guidance() -> Guidance:
    return Guidance(scale=4.0, t_max=0.8)


@pytest.fixture
def exact(flow, guidance) -> ExactAverageVelocity:
    return ExactAverageVelocity(flow, guidance, steps=128)


@pytest.fixture
def tiny_net() -> ToyVelocityNet:
    return ToyVelocityNet(ToyNetConfig(dim=3, num_classes=3, width=32, depth=2, freq_dim=16))


@pytest.fixture
def fixture_threads():
    """Run at the thread count the MMAudio fixtures were made with (2): float sums in the BLAS kernels
    depend on it, and the parity checks are bitwise."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_encoder_set(monkeypatch):
    """Register training_factory's tiny dimensions as encoder set 'test' (network sizes follow the cache)."""
    from soundvcm import encoders
    from training_factory import tiny_spec

    monkeypatch.setitem(encoders.ENCODER_SPECS, "test", tiny_spec())
