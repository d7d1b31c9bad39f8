"""VGGish (av-benchmark's FD-VGG), our own module: 128-d embeddings per 0.96 s of 16 kHz audio.

Front end as ``mel_features.waveform_to_examples`` computes it: frames of 25 ms (400 samples)
with a hop of 10 ms, periodic Hann window, |rfft| with 512 points, 64 HTK-style mel bands
(1127 ln(1 + f / 700)) from 125 to 7500 Hz with the DC bin zeroed, log(mel + 0.01), then
non-overlapping 96-frame examples (incomplete ones dropped). Network: VGG (64, M, 128, M, 256,
256, M, 512, 512, M; 3x3 convs + ReLU), flattened in (time, frequency, channel) order, and
4096-4096-128 fully connected layers; no PCA post-processing (as av-benchmark). Frame
embeddings of all clips are pooled for FD.

Weights: torchvggish's ``vggish-10086976.pth`` (registry name ``vggish``), strict apart from
the PCA parameters, which are not used.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from soundvcm.encoders.base import freeze
from soundvcm.weights import WeightFile, load_strict, load_weights, module_shapes

SAMPLE_RATE, WINDOW, HOP, FFT, MELS, EXAMPLE = 16_000, 400, 160, 512, 64, 96


def mel_matrix() -> Tensor:
    """(257, 64) VGGish mel weights (HTK-style scale, DC bin zeroed), float64."""
    bins_hz = torch.linspace(0.0, SAMPLE_RATE / 2, FFT // 2 + 1, dtype=torch.float64)

    def to_mel(f):
        return 1127.0 * torch.log(1.0 + f / 700.0)

    bins_mel = to_mel(bins_hz)
    edges = torch.linspace(
        float(to_mel(torch.tensor(125.0))), float(to_mel(torch.tensor(7500.0))), MELS + 2, dtype=torch.float64
    )
    lower = (bins_mel[:, None] - edges[None, :-2]) / (edges[1:-1] - edges[:-2])
    upper = (edges[None, 2:] - bins_mel[:, None]) / (edges[2:] - edges[1:-1])
    weights = torch.clamp(torch.minimum(lower, upper), min=0.0)
    weights[0] = 0.0
    return weights


def examples(wave: Tensor) -> Tensor:
    """(samples,) at 16 kHz -> (N, 96, 64) log-mel examples."""
    x = wave.double()
    frames = x.unfold(0, WINDOW, HOP)  # no padding: incomplete frames dropped
    window = 0.5 - 0.5 * torch.cos(2 * math.pi * torch.arange(WINDOW, dtype=torch.float64) / WINDOW)
    mag = torch.fft.rfft(frames * window, n=FFT).abs()
    logmel = torch.log(mag @ mel_matrix() + 0.01)
    count = (logmel.shape[0] - EXAMPLE) // EXAMPLE + 1
    if count < 1:
        return logmel.new_zeros(0, EXAMPLE, MELS).float()
    return logmel[: count * EXAMPLE].reshape(count, EXAMPLE, MELS).float()


class VGGish(nn.Module):
    def __init__(self):
        super().__init__()
        layers, cin = [], 1
        for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M"):
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 4 * 6, 4096), nn.ReLU(True), nn.Linear(4096, 4096), nn.ReLU(True), nn.Linear(4096, 128)
        )

    def forward(self, examples: Tensor) -> Tensor:
        """(N, 96, 64) -> (N, 128)."""
        x = self.features(examples[:, None])  # (N, 512, 6, 4)
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
        return self.embeddings(x)

    def embed(self, wave: Tensor) -> Tensor:
        ex = examples(wave).to(next(self.parameters()).device)
        return self(ex) if len(ex) else ex.new_zeros(0, 128)


def load_vggish(path) -> VGGish:
    state = load_weights(path, "VGGish")
    state = {k: v for k, v in state.items() if not k.startswith("pproc.")}
    net = VGGish()
    load_strict(net, state, "VGGish")
    return freeze(net)


VGGISH_WEIGHTS = WeightFile(
    "vggish",
    "vggish-10086976.pth",
    "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth",
    None,
    "VGGish (FD-VGG)",
    sha256_prefix="10086976",
    shapes=lambda: module_shapes(VGGish()),
    prepare=lambda state: {k: v for k, v in state.items() if not k.startswith("pproc.")},
)
