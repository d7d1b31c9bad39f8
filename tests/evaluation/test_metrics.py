"""Metrics pinned by known answers (av-benchmark definitions)."""

import math

import numpy as np
import pytest
import torch

from soundvcm.evaluation.metrics import (
    MetricError,
    desync,
    desync_grid,
    embedding_statistics,
    frechet_distance,
    frechet_distance_embeddings,
    ib_score,
    inception_score,
    kl_softmax,
    mean_abs_onset_lag_ms,
    onset_lag_ms,
)


def test_fd_known_answers():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 6, generator=g, dtype=torch.float64)
    assert abs(frechet_distance_embeddings(x, x)) < 1e-9  # identical Gaussians: 0
    mu, s = embedding_statistics(x)
    shift = torch.arange(6, dtype=torch.float64)
    assert frechet_distance(mu, s, mu + shift, s) == pytest.approx(float(shift @ shift), abs=1e-8)
    # diagonal covariances: sum (sigma1 - sigma2)^2 + |dmu|^2
    a, b = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 1.0, 0.25])
    expected = ((a.sqrt() - b.sqrt()) ** 2).sum().item() + 1.0
    fd = frechet_distance(torch.zeros(3), torch.diag(a), torch.tensor([1.0, 0, 0]), torch.diag(b))
    assert fd == pytest.approx(expected, abs=1e-10)
    # a general (non-commuting) pair against the scipy-style definition via eigenvalues of S1 S2
    m1 = torch.randn(4, 4, generator=g, dtype=torch.float64)
    m2 = torch.randn(4, 4, generator=g, dtype=torch.float64)
    s1, s2 = m1 @ m1.T + 0.1 * torch.eye(4), m2 @ m2.T + 0.1 * torch.eye(4)
    tr_sqrt = torch.linalg.eigvals(s1 @ s2).real.clamp_min(0).sqrt().sum().item()
    fd = frechet_distance(torch.zeros(4), s1, torch.zeros(4), s2)
    assert fd == pytest.approx(s1.trace().item() + s2.trace().item() - 2 * tr_sqrt, rel=1e-9)


def test_fd_fails_clearly():
    with pytest.raises(MetricError, match="not positive semi-definite"):
        frechet_distance(torch.zeros(2), torch.diag(torch.tensor([1.0, -1.0])), torch.zeros(2), torch.eye(2))
    with pytest.raises(MetricError, match="non-finite"):
        frechet_distance(torch.tensor([math.nan, 0.0]), torch.eye(2), torch.zeros(2), torch.eye(2))
    with pytest.raises(MetricError, match="N >= 2"):
        frechet_distance_embeddings(torch.zeros(1, 3), torch.zeros(4, 3))


def test_kl_known_answers():
    logits = torch.randn(10, 5)
    assert abs(kl_softmax(logits, logits)) < 1e-12
    p, q = torch.tensor([[0.75, 0.25]]), torch.tensor([[0.5, 0.5]])
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # KL(gt || pred)
    assert kl_softmax(q.log(), p.log()) == pytest.approx(expected)
    assert kl_softmax(torch.cat([q, q]).log(), torch.cat([p, p]).log()) == pytest.approx(expected)  # / N


def test_inception_score_known_answers():
    same = torch.zeros(100, 7)
    assert inception_score(same) == pytest.approx((1.0, 0.0))  # every prediction identical: IS = 1
    one_hot = torch.full((100, 10), -1e4)
    one_hot[torch.arange(100), torch.arange(100) % 10] = 0.0
    mean, std = inception_score(one_hot, splits=1)
    assert mean == pytest.approx(10.0, rel=1e-6)  # confident and uniform over K classes: IS = K
    # the shuffle is numpy's RandomState(2020) permutation, as av-benchmark does
    logits = torch.randn(50, 4, generator=torch.Generator().manual_seed(1))
    perm = np.random.RandomState(2020).permutation(50)
    assert inception_score(logits, splits=5) == inception_score(logits[perm], splits=5, seed=None)
    with pytest.raises(MetricError):
        inception_score(torch.zeros(3, 2))


def test_ib_score_and_desync():
    v = torch.randn(8, 16)
    assert ib_score(v, v) == pytest.approx(100.0)
    assert ib_score(v, -v) == pytest.approx(-100.0)
    grid = desync_grid()
    assert grid.tolist() == pytest.approx([-2 + 0.2 * i for i in range(21)], abs=1e-12)
    logits = torch.zeros(4, 21)
    logits[0, 10] = logits[1, 12] = logits[2, 8] = logits[3, 20] = 1.0  # 0, +0.4, -0.4, +2.0 s
    assert desync(logits) == pytest.approx((0 + 0.4 + 0.4 + 2.0) / 4)


def _clicks(sr, shift_samples=0, n=16000):
    x = torch.zeros(n)
    for start in (1600, 5200, 9000, 12100):
        x[start + shift_samples : start + shift_samples + 40] = torch.hann_window(40)
    return x


@pytest.mark.parametrize("shift_ms", [0, 40, -60, 125])
def test_onset_lag_recovers_known_shifts(shift_ms):
    sr = 16000
    gt = _clicks(sr)
    pred = _clicks(sr, int(shift_ms * sr / 1000))
    assert onset_lag_ms(pred, gt, sr) == pytest.approx(shift_ms, abs=5.0)


def test_mean_abs_onset_lag():
    sr = 16000
    pairs = [(_clicks(sr, 640), _clicks(sr)), (_clicks(sr, -320), _clicks(sr))]
    assert mean_abs_onset_lag_ms(pairs, sr) == pytest.approx((40 + 20) / 2, abs=5.0)
    with pytest.raises(MetricError):
        mean_abs_onset_lag_ms([], sr)


def test_kid_is_unbiased_and_grows_with_a_shift():
    """Two samples of one distribution average to KID ~ 0 (the biased V-statistic would be > 0),
    a shifted sample gives a clearly positive value; fewer rows than dimensions are fine."""
    from soundvcm.evaluation.metrics import MetricError, kernel_inception_distance

    g = torch.Generator().manual_seed(0)
    same = [kernel_inception_distance(torch.randn(20, 64, generator=g), torch.randn(20, 64, generator=g))
            for _ in range(200)]  # fmt: skip
    shifted = kernel_inception_distance(torch.randn(20, 64, generator=g), torch.randn(20, 64, generator=g) + 0.5)
    spread = float(torch.tensor(same).std())
    assert abs(float(torch.tensor(same).mean())) < 3 * spread / 200**0.5 + 1e-3
    assert shifted > 10 * spread
    x = torch.randn(5, 3, generator=g)
    k = (x @ x.T / 3 + 1) ** 3
    y = torch.randn(4, 3, generator=g)
    ky, kxy = (y @ y.T / 3 + 1) ** 3, (x @ y.T / 3 + 1) ** 3
    manual = (k.sum() - k.trace()) / 20 + (ky.sum() - ky.trace()) / 12 - 2 * kxy.mean()
    assert kernel_inception_distance(x, y) == pytest.approx(float(manual), rel=1e-5)  # manual: float32
    with pytest.raises(MetricError, match="at least 2 rows"):
        kernel_inception_distance(x[:1], y)
