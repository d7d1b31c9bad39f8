"""PANNs Cnn14 at 16 kHz (av-benchmark's FD-PANN, KL-PANNS-softmax, ISC-PANNS), our own module.

Front end as torchlibrosa computes it (its kernels are part of the checkpoint, so they load with
the weights): a centred, reflect-padded STFT as a 1-D convolution with Hann-windowed DFT
kernels (n_fft = window 512, hop 160), power spectrum, 64 Slaney mel bands from 50 to 8000 Hz,
10 log10(max(mel, 1e-10)). Network: BatchNorm over mel bands, six conv blocks (two 3x3 conv + BN +
ReLU, 2x2 average pooling except the last) with 64 ... 2048 channels, mean over frequency, max +
mean over time, ``fc1`` + ReLU: the 2048-d embedding (av-benchmark's "2048"), and
``fc_audioset``: 527 AudioSet logits (pre-sigmoid, used for KL and IS).

Weights: ``Cnn14_16k_mAP=0.438.pth`` (registry name ``panns_cnn14_16k``), ``["model"]``, strict.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from soundvcm.encoders.base import freeze
from soundvcm.evaluation.layers import ConvBlock
from soundvcm.media.mel import mel_filterbank
from soundvcm.weights import WeightFile, load_strict, load_weights, module_shapes

SAMPLE_RATE, N_FFT, HOP, MELS, FMIN, FMAX = 16_000, 512, 160, 64, 50.0, 8_000.0


def _dft_kernels(n_fft: int) -> tuple[Tensor, Tensor]:
    """(n_fft // 2 + 1, 1, n_fft) real and imaginary DFT rows times a periodic Hann window."""
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[:, None]
    window = 0.5 - 0.5 * torch.cos(2 * math.pi * n / n_fft)
    angle = -2 * math.pi * k * n / n_fft
    return (torch.cos(angle) * window)[:, None].float(), (torch.sin(angle) * window)[:, None].float()


class Cnn14(nn.Module):
    def __init__(self, classes: int = 527):
        super().__init__()
        real, imag = _dft_kernels(N_FFT)
        self.spectrogram_extractor = nn.Module()
        self.spectrogram_extractor.stft = nn.Module()
        self.spectrogram_extractor.stft.conv_real = nn.Conv1d(1, N_FFT // 2 + 1, N_FFT, stride=HOP, bias=False)
        self.spectrogram_extractor.stft.conv_imag = nn.Conv1d(1, N_FFT // 2 + 1, N_FFT, stride=HOP, bias=False)
        with torch.no_grad():
            self.spectrogram_extractor.stft.conv_real.weight.copy_(real)
            self.spectrogram_extractor.stft.conv_imag.weight.copy_(imag)
        self.logmel_extractor = nn.Module()
        self.logmel_extractor.melW = nn.Parameter(mel_filterbank(SAMPLE_RATE, N_FFT, MELS, FMIN, FMAX).T.contiguous())
        self.bn0 = nn.BatchNorm2d(MELS)
        chans = [1, 64, 128, 256, 512, 1024, 2048]
        for i in range(6):
            setattr(self, f"conv_block{i + 1}", ConvBlock(chans[i], chans[i + 1]))
        self.fc1 = nn.Linear(2048, 2048)
        self.fc_audioset = nn.Linear(2048, classes)

    def log_mel(self, wave: Tensor) -> Tensor:
        """(B, samples) at 16 kHz -> (B, 1, frames, 64) in dB."""
        x = F.pad(wave[:, None], (N_FFT // 2, N_FFT // 2), mode="reflect")
        stft = self.spectrogram_extractor.stft
        power = stft.conv_real(x).square() + stft.conv_imag(x).square()  # (B, F, T)
        mel = power.transpose(1, 2) @ self.logmel_extractor.melW  # (B, T, 64)
        return (10.0 * torch.log10(mel.clamp(min=1e-10)))[:, None]

    def forward(self, wave: Tensor) -> tuple[Tensor, Tensor]:
        """(B, samples) -> (2048-d embeddings, 527 logits)."""
        x = self.bn0(self.log_mel(wave).transpose(1, 3)).transpose(1, 3)
        for i, pool in enumerate((2, 2, 2, 2, 2, 1)):
            x = getattr(self, f"conv_block{i + 1}")(x, pool)
        x = x.mean(dim=3)
        x = x.amax(dim=2) + x.mean(dim=2)
        x = F.relu(self.fc1(x))
        return x, self.fc_audioset(x)


def load_panns(path) -> Cnn14:
    state = load_weights(path, "PANNs Cnn14")
    if isinstance(state, dict) and "model" in state:
        state = state["model"]
    net = Cnn14()
    load_strict(net, state, "PANNs Cnn14 16k")
    return freeze(net)


PANNS_WEIGHTS = WeightFile(
    "panns_cnn14_16k",
    "Cnn14_16k_mAP=0.438.pth",
    "https://zenodo.org/record/3987831/files/Cnn14_16k_mAP%3D0.438.pth",
    None,
    "PANNs Cnn14, 16 kHz (FD-PANN, KL-PANNS-softmax, ISC-PANNS)",
    shapes=lambda: module_shapes(Cnn14()),
)
