"""The distillation losses of a lighter vocoder (:mod:`soundvcm.training.vocoder`): multi-resolution
STFT, the compressed complex spectrum of an iSTFT head, and the log-mel L1 (HiFi-GAN's mel loss)."""

from __future__ import annotations

import torch
from torch import Tensor

from soundvcm.media.mel import MEL_HIFIGAN, mel_spectrogram

STFT_RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))


def stft_losses(pred: Tensor, target: Tensor) -> Tensor:
    """Multi-resolution STFT loss: spectral convergence + log-magnitude L1, averaged over resolutions."""
    total = pred.new_zeros(())
    for n_fft, hop in STFT_RESOLUTIONS:
        window = torch.hann_window(n_fft, device=pred.device)
        p = torch.stft(pred, n_fft, hop, window=window, return_complex=True).abs().clamp_min(1e-5)
        t = torch.stft(target, n_fft, hop, window=window, return_complex=True).abs().clamp_min(1e-5)
        total = total + torch.linalg.norm(t - p) / torch.linalg.norm(t) + (t.log() - p.log()).abs().mean()
    return total / len(STFT_RESOLUTIONS)


def spectrum_loss(pred: Tensor, target: Tensor, floor: float = 1e-5) -> Tensor:
    """Compressed complex MSE of a predicted spectrum against a target one: |X|^0.3 e^(i angle X)
    compared, so a phase error costs in proportion to the bin's compressed magnitude (the silent
    bins, whose phase means nothing, cost nearly nothing) and a 3-4 decade range of magnitudes keeps
    comparable weights. For a deterministic teacher the phase has one target, which an iSTFT head can
    be told directly (no discriminator needed); the magnitudes are the waveform losses' already."""
    comp_p = pred * pred.abs().clamp_min(floor).pow(0.3 - 1)
    comp_t = target * target.abs().clamp_min(floor).pow(0.3 - 1)
    return (comp_p - comp_t).abs().pow(2).mean()


def log_mel_l1(pred: Tensor, target: Tensor) -> Tensor:
    return (mel_spectrogram(pred, MEL_HIFIGAN) - mel_spectrogram(target, MEL_HIFIGAN)).abs().mean()
