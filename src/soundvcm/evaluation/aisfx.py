"""The aisfx sound-effects embedder (ISMIR 2022 "X-Sequential-CE"), our own module with real
offline weights from the ``aisfx`` package: FD on its 512-d embedding, KL and IS on a classifier head.

Input pipeline (the package's librosa path, in torch): audio at 44.1 kHz, peak-normalised;
power mel spectrogram (n_fft 2048, hop 1024, Hann, centred with zero padding, 96 HTK-scale bands
from 0 to 22.05 kHz, each filter of unit L1 norm); log10(10^4 S + 1) / 9.4578 (the paper's
min-max range); blocks of 100 frames (2.3 s) with a hop of 50, the last partial block dropped
(one block minimum, zero-padded). Network: four conv blocks (3x3 conv, BN, ReLU, twice; 2x2 max
pool after the first three) with 64/128/256/512 channels, mean over frequency, max over time:
a 512-d embedding per block. Heads: nine MLPs (512-256-128-classes) trained on nine sound-effects
libraries; we use ``soundstormBalanced`` (81 classes) for KL and IS.

The checkpoint pickles numpy scalars next to the weights; it is read with
``torch.load(weights_only=True)`` and only those numpy types allow-listed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from soundvcm.encoders.base import freeze
from soundvcm.evaluation.layers import ConvBlock
from soundvcm.media.mel import mel_filterbank
from soundvcm.weights import WeightsError, load_strict

SAMPLE_RATE = 44_100
N_FFT, HOP, MELS = 2048, 1024, 96
SPEC_MAX = 9.457798957824707
BLOCK, BLOCK_HOP = 100, 50
HEAD = "soundstormBalanced"
INSTALL_HINT = "Install it with: pip install --no-deps aisfx==0.1.2 (or `make install`)"


class AisfxNet(nn.Module):
    """``embedding_net`` + ``fc`` heads with the package's key names."""

    def __init__(self, head_classes: tuple[int, ...] = (78, 79, 69, 81, 10, 27, 3, 23, 8), width: int = 64):
        super().__init__()
        self.embedding_net = nn.Module()
        chans = [1, width, 2 * width, 4 * width, 8 * width]
        for i in range(4):
            setattr(self.embedding_net, f"conv_block{i + 1}", ConvBlock(chans[i], chans[i + 1]))
        d = chans[-1]
        self.fc = nn.ModuleList(
            nn.Sequential(nn.Linear(d, d // 2), nn.ReLU(), nn.Linear(d // 2, d // 4), nn.ReLU(), nn.Linear(d // 4, n))
            for n in head_classes
        )
        self.heads: dict[str, int] = {}

    def embed(self, blocks: Tensor) -> Tensor:
        """(N, 100, 96) normalised log-mel blocks -> (N, 512)."""
        x = blocks[:, None]
        for i, pool in enumerate((2, 2, 2, 1)):
            x = getattr(self.embedding_net, f"conv_block{i + 1}")(x, pool, "max")
        return x.mean(dim=3).amax(dim=2)

    def logits(self, embedding: Tensor, head: str = HEAD) -> Tensor:
        return self.fc[self.heads.get(head, 3)](embedding)


def checkpoint_path() -> Path:
    spec = importlib.util.find_spec("aisfx")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(f"the aisfx embedder's package is not installed. {INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0]) / "models" / "checkpoint.pth"


def load_aisfx(path: Path | None = None) -> AisfxNet:
    path = path or checkpoint_path()
    if not path.is_file():
        raise WeightsError(f"aisfx: {path} not found. {INSTALL_HINT}")
    scalar = (np._core.multiarray.scalar, "numpy.core.multiarray.scalar")  # type: ignore[attr-defined]
    allowed = [scalar, np.dtype, type(np.dtype("int64")), type(np.dtype("float64"))]
    try:
        with torch.serialization.safe_globals(allowed):
            weights, datasets = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"aisfx: {path} is not a readable checkpoint ({exc.__class__.__name__})") from exc
    order = sorted(datasets.items(), key=lambda kv: int(kv[1][0]))
    net = AisfxNet(tuple(int(n) for _, (_, n) in order))
    load_strict(net, weights, "aisfx")
    net.heads = {name: int(idx) for name, (idx, _) in order}
    return freeze(net)


def log_mel(wave: Tensor) -> Tensor:
    """(samples,) at 44.1 kHz -> (frames, 96) normalised log-mel (the package's librosa recipe)."""
    wave = wave.float()
    peak = wave.abs().max()
    wave = wave / (peak if peak > 0 else 1.0)
    spec = torch.stft(
        F.pad(wave[None], (N_FFT // 2, N_FFT // 2))[0],
        N_FFT,
        hop_length=HOP,
        window=torch.hann_window(N_FFT, device=wave.device),
        center=False,
        return_complex=True,
    )
    power = spec.real.square() + spec.imag.square()
    fb = mel_filterbank(SAMPLE_RATE, N_FFT, MELS, 0.0, SAMPLE_RATE / 2, htk=True, norm=1.0).to(wave.device)
    mel = torch.log10(fb @ power * 10_000.0 + 1.0) / SPEC_MAX
    return mel.T


def blocks(spec: Tensor) -> Tensor:
    """(frames, 96) -> (N, 100, 96): hop 50, last partial block dropped, at least one block."""
    frames = spec.shape[0]
    count = int(np.ceil((frames - BLOCK) / BLOCK_HOP + 1))
    if (frames - BLOCK) % BLOCK_HOP != 0:
        count -= 1
    count = max(count, 1)
    padded = torch.cat([spec, spec.new_zeros(BLOCK, spec.shape[1])])
    return torch.stack([padded[i * BLOCK_HOP : i * BLOCK_HOP + BLOCK] for i in range(count)])


@torch.inference_mode()
def embed_clip(net: AisfxNet, wave: Tensor) -> tuple[Tensor, Tensor]:
    """One clip at 44.1 kHz -> (block embeddings (N, 512), clip logits (81,) of the mean embedding)."""
    device = next(net.parameters()).device
    emb = net.embed(blocks(log_mel(wave.to(device))))
    return emb.cpu(), net.logits(emb.mean(0, keepdim=True))[0].cpu()
