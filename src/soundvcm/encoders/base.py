"""The interface every encoder set implements, and the helpers they share.

An encoder set turns frames, text and waveforms into the network's conditions and latents and
back: ``encode_clip`` (8 fps frames -> (B, T, clip_dim)), ``encode_sync`` (25 fps frames ->
(B, N, sync_dim)), ``encode_text`` (strings -> (B, L, text_dim)), ``encode_audio`` (waveform ->
latent posterior mean and std, (B, L, latent_dim) each) and ``decode_audio`` (latent ->
waveform). All encoders are frozen, in eval mode and run under ``torch.inference_mode``; they
work in batches and follow the module's device, with an optional autocast dtype.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from soundvcm.features import FeatureSizes
from soundvcm.media.video import FrameSpec
from soundvcm.sequence import SequenceConfig


@dataclass(frozen=True)
class EncoderSetSpec:
    """What a network must agree with: feature dimensions, token counts and the audio timeline."""

    name: str
    clip_dim: int
    sync_dim: int
    text_dim: int
    text_seq_len: int
    latent_dim: int
    sequence: SequenceConfig
    clip_frames: FrameSpec
    sync_frames: FrameSpec
    # what the set owns besides its sizes (issue 36: no code asks a set's name what it is):
    n_mels: int = 80  # bands of the log-mel its latent decodes to and its vocoder reads
    offline: bool = True  # every weight file ships with pip packages (no download)
    vocoders: tuple[str, ...] = ("hifigan",)  # what --vocoder may name for it, auto's preference first
    build: Callable[..., nn.Module] | None = field(default=None, compare=False, repr=False)
    # (device, pretrained, vocoder) -> the encoder modules; None: a set registered by hand brings its own
    weight_files: Callable[[], dict[str, Any]] | None = field(default=None, compare=False, repr=False)
    # -> {role: path or md5} of the weight files it reads (recorded in feature caches)

    @classmethod
    def of(cls, features: FeatureSizes, clip_frames: FrameSpec, sync_frames: FrameSpec, **owned) -> EncoderSetSpec:
        """The spec of a set whose name, widths and timeline are ``features`` (soundvcm.features: defined
        once there, read by the network presets too); ``owned``: n_mels, offline, build, weight_files."""
        return cls(
            features.name, features.clip_dim, features.sync_dim, features.text_dim, features.text_seq_len,
            features.latent_dim, features.sequence, clip_frames, sync_frames, **owned,
        )  # fmt: skip

    @property
    def features(self) -> FeatureSizes:
        return FeatureSizes(
            self.name, self.clip_dim, self.sync_dim, self.text_dim, self.text_seq_len, self.latent_dim, self.sequence
        )

    def check_vocoder(self, vocoder: str) -> None:
        """Refuse a --vocoder this set cannot decode with, in one line (a path: a distilled student's
        `soundvcm vocoder export` stem, either kind, for sets that decode HiFi-GAN's mel)."""
        if vocoder == "auto" or vocoder in self.vocoders:
            return
        stem = Path(vocoder)
        if "hifigan" in self.vocoders and (len(stem.parts) > 1 or stem.with_suffix(".safetensors").is_file()):
            return
        allowed = ", ".join(("auto", *self.vocoders)) + (
            " or a `soundvcm vocoder export` path" if "hifigan" in self.vocoders else ""
        )
        raise ValueError(f"--vocoder {vocoder}: the '{self.name}' encoder set decodes with {allowed}")

    def check_network(self, config) -> None:
        """Raise ValueError naming every dimension where a network config disagrees."""
        bad = []
        for key in ("clip_dim", "sync_dim", "text_dim", "text_seq_len", "latent_dim"):
            if getattr(config, key) != getattr(self, key):
                bad.append(f"{key} {getattr(config, key)} (encoders: {getattr(self, key)})")
        seq = config.sequence
        for key in ("sample_rate", "hop_length", "latent_downsample", "clip_fps", "sync_fps", "sync_layout"):
            if getattr(seq, key) != getattr(self.sequence, key):
                bad.append(f"sequence.{key} {getattr(seq, key)} (encoders: {getattr(self.sequence, key)})")
        if bad:
            raise ValueError(f"the model does not fit the '{self.name}' encoder set: " + "; ".join(bad))


M = TypeVar("M", bound=nn.Module)


def freeze(module: M) -> M:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_float_frames(frames: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """uint8 (..., C, H, W) -> normalised float: (x / 255 - mean) / std per channel."""
    x = frames.float() / 255.0
    m = torch.tensor(mean, device=x.device).view(-1, 1, 1)
    s = torch.tensor(std, device=x.device).view(-1, 1, 1)
    return (x - m) / s


def take_frames(frames: Tensor, need: int) -> Tensor:
    """The first ``need`` frames (T, ...); a clip ending within the last one is padded by repeating
    its last frame (nothing moves after the video ends)."""
    if frames.shape[0] >= need:
        return frames[:need]
    return torch.cat([frames, frames[-1:].expand(need - frames.shape[0], *frames.shape[1:])])


def chunked(fn, x: Tensor, chunk: int) -> Tensor:
    """Apply ``fn`` over the first dimension in chunks (bounded memory for long clips)."""
    return torch.cat([fn(x[i : i + chunk]) for i in range(0, x.shape[0], chunk)], dim=0)
