"""Evaluation metrics as pure functions over embeddings, logits and envelopes (§4.2).

Definitions follow av-benchmark (MMAudio's evaluation code), so numbers sit next to published
tables:

* FD: Fréchet distance between Gaussians fitted to two embedding sets (unbiased covariance);
* KL: KL(gt || pred) of softmax class distributions, summed over pairs and divided by N;
* IS: inception score over 10 splits after a seeded shuffle (seed 2020), mean and std;
* IB-score: mean cosine similarity of paired video/audio embeddings, reported x 100;
* DeSync: mean |offset| in seconds on Synchformer's 21-class grid over [-2, 2] s, taken over
  the first and the last 4.8 s of each clip.

Plus an offline sync proxy: the lag that maximises the cross-correlation of onset envelopes.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


class MetricError(ValueError):
    """A metric cannot be computed from these inputs (too few samples, ill-conditioned, ...)."""


def embedding_statistics(embeddings: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and unbiased covariance (rows are samples), in float64."""
    x = torch.as_tensor(embeddings, dtype=torch.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise MetricError(f"need a (N >= 2, D) embedding matrix, got shape {tuple(x.shape)}")
    return x.mean(0), torch.cov(x.T, correction=1).reshape(x.shape[1], x.shape[1])


def _psd_sqrt(matrix: Tensor, name: str, tol: float) -> Tensor:
    vals, vecs = torch.linalg.eigh((matrix + matrix.T) / 2)
    scale = max(vals.abs().max().item(), 1e-300)
    if vals.min().item() < -tol * scale:
        raise MetricError(f"{name} is not positive semi-definite (smallest eigenvalue {vals.min().item():.3g})")
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor, tol: float = 1e-8) -> float:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2), in float64.

    The symmetric form needs only eigendecompositions of PSD matrices, so it is stable where
    ``sqrtm(S1 S2)`` goes complex; a covariance that is not PSD or a non-finite input raises
    :class:`MetricError` instead of returning a silently wrong number.
    """
    mu1, mu2 = torch.as_tensor(mu1, dtype=torch.float64), torch.as_tensor(mu2, dtype=torch.float64)
    s1, s2 = torch.as_tensor(sigma1, dtype=torch.float64), torch.as_tensor(sigma2, dtype=torch.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.shape[0], mu1.shape[0]):
        raise MetricError(
            f"shape mismatch: mu {tuple(mu1.shape)}/{tuple(mu2.shape)}, sigma {tuple(s1.shape)}/{tuple(s2.shape)}"
        )
    for name, t in (("mu1", mu1), ("mu2", mu2), ("sigma1", s1), ("sigma2", s2)):
        if not torch.isfinite(t).all():
            raise MetricError(f"{name} has non-finite entries")
    r1 = _psd_sqrt(s1, "sigma1", tol)
    inner = _psd_sqrt(r1 @ s2 @ r1, "S1^1/2 S2 S1^1/2", tol)
    diff = mu1 - mu2
    return float(diff @ diff + s1.trace() + s2.trace() - 2 * inner.trace())


def frechet_distance_embeddings(pred: Tensor, gt: Tensor) -> float:
    """FD between two embedding sets (av-benchmark's ``compute_fd``)."""
    mu_p, s_p = embedding_statistics(pred)
    mu_g, s_g = embedding_statistics(gt)
    return frechet_distance(mu_p, s_p, mu_g, s_g)


def kernel_inception_distance(pred: Tensor, gt: Tensor, degree: int = 3) -> float:
    """KID: the unbiased MMD^2 between two embedding sets with the polynomial kernel
    k(x, y) = (x.y / d + 1)^degree (Binkowski et al. 2018). Unlike FD it needs no covariance
    estimate, so it stays unbiased when a set has fewer rows than dimensions. Needs >= 2 rows each."""
    x, y = pred.double(), gt.double()
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise MetricError(f"KID needs at least 2 rows per set, got {m} and {n}")
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise MetricError("KID: non-finite embeddings")
    d = x.shape[1]
    kxx = (x @ x.T / d + 1) ** degree
    kyy = (y @ y.T / d + 1) ** degree
    kxy = (x @ y.T / d + 1) ** degree
    xx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    yy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return float(xx + yy - 2 * kxy.mean())


def kl_softmax(pred_logits: Tensor, gt_logits: Tensor) -> float:
    """sum_i KL(softmax(gt_i) || softmax(pred_i)) / N over paired rows."""
    pred = torch.as_tensor(pred_logits, dtype=torch.float64)
    gt = torch.as_tensor(gt_logits, dtype=torch.float64)
    if pred.shape != gt.shape or pred.ndim != 2:
        raise MetricError(f"paired logits must have equal (N, C) shapes, got {tuple(pred.shape)} and {tuple(gt.shape)}")
    log_p, log_q = gt.log_softmax(1), pred.log_softmax(1)
    return float((log_p.exp() * (log_p - log_q)).sum() / pred.shape[0])


def inception_score(logits: Tensor, splits: int = 10, seed: int | None = 2020) -> tuple[float, float]:
    """(mean, std) over splits of exp(E_x KL(p(y|x) || p(y))); rows shuffled with a seeded
    numpy RandomState as av-benchmark does (``seed=None``: no shuffle)."""
    x = torch.as_tensor(logits, dtype=torch.float64)
    n = x.shape[0]
    if x.ndim != 2 or n < splits:
        raise MetricError(f"need (N >= splits={splits}, C) logits, got shape {tuple(x.shape)}")
    if seed is not None:
        x = x[torch.from_numpy(np.random.RandomState(seed).permutation(n))]
    log_p = x.log_softmax(1)
    scores = []
    for i in range(splits):
        chunk = log_p[i * n // splits : (i + 1) * n // splits]
        log_q = chunk.exp().mean(0, keepdim=True).log()
        scores.append(math.exp((chunk.exp() * (chunk - log_q)).sum(1).mean().item()))
    return float(np.mean(scores)), float(np.std(scores))


def ib_score(video_embeddings: Tensor, audio_embeddings: Tensor) -> float:
    """Mean cosine similarity of paired embeddings, x 100 as papers report it."""
    v = torch.as_tensor(video_embeddings, dtype=torch.float64)
    a = torch.as_tensor(audio_embeddings, dtype=torch.float64)
    if v.shape != a.shape:
        raise MetricError(f"paired embeddings differ in shape: {tuple(v.shape)} vs {tuple(a.shape)}")
    return float(torch.nn.functional.cosine_similarity(v, a, dim=-1).mean() * 100)


def desync_grid(num_classes: int = 21, max_offset_s: float = 2.0) -> Tensor:
    """Synchformer's offset classes: evenly spaced seconds in [-max, max]."""
    return torch.linspace(-max_offset_s, max_offset_s, num_classes, dtype=torch.float64)


def desync(offset_logits: Tensor, grid: Tensor | None = None) -> float:
    """Mean |predicted offset| in seconds; ``offset_logits`` is (N, 21) with one row per clip
    window (av-benchmark scores the first and the last 14 segments of each clip)."""
    logits = torch.as_tensor(offset_logits)
    grid = desync_grid(logits.shape[-1]) if grid is None else grid
    return float(grid[logits.argmax(-1)].abs().mean())


def onset_envelope(wave: Tensor, sample_rate: int, hop_ms: float = 5.0, n_fft: int = 512) -> Tensor:
    """Spectral-flux onset strength: positive frame-to-frame increase of log magnitude, summed
    over frequency, one value per ``hop_ms``."""
    x = torch.as_tensor(wave, dtype=torch.float32).flatten()
    hop = max(1, int(round(sample_rate * hop_ms / 1000)))
    spec = torch.stft(x, n_fft, hop, window=torch.hann_window(n_fft), center=True, return_complex=True).abs()
    log_mag = torch.log1p(100 * spec)
    flux = (log_mag[:, 1:] - log_mag[:, :-1]).clamp_min(0).sum(0)
    return torch.cat([torch.zeros(1), flux])


def onset_lag_ms(pred: Tensor, gt: Tensor, sample_rate: int, max_lag_ms: float = 500.0, hop_ms: float = 5.0) -> float:
    """The lag (ms) maximising the cross-correlation of onset envelopes; positive when the
    prediction is late relative to the ground truth."""
    a = onset_envelope(pred, sample_rate, hop_ms)
    b = onset_envelope(gt, sample_rate, hop_ms)
    n = min(a.shape[0], b.shape[0])
    a, b = a[:n] - a[:n].mean(), b[:n] - b[:n].mean()
    max_lag = int(max_lag_ms / hop_ms)
    best, best_lag = -math.inf, 0
    for lag in range(-max_lag, max_lag + 1):
        lo, hi = max(lag, 0), n + min(lag, 0)  # pred[t] against gt[t - lag]
        c = float((a[lo:hi] * b[lo - lag : hi - lag]).sum())
        if c > best:
            best, best_lag = c, lag
    return best_lag * hop_ms


def mean_abs_onset_lag_ms(pairs, sample_rate: int, **kw) -> float:
    """Mean |onset lag| in ms over (pred, gt) waveform pairs."""
    lags = [abs(onset_lag_ms(p, g, sample_rate, **kw)) for p, g in pairs]
    if not lags:
        raise MetricError("no (pred, gt) pairs to score")
    return float(np.mean(lags))
