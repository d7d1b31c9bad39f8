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
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from soundvcm.media.video import FrameSpec
from soundvcm.sequence import SequenceConfig


class WeightsError(ValueError):
    """Weights that are missing, unreadable, fail their checksum, or don't fit the module."""


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

    def check_network(self, config) -> None:
        """Raise ValueError naming every dimension where a network config disagrees."""
        bad = []
        for key in ("clip_dim", "sync_dim", "text_dim", "text_seq_len", "latent_dim"):
            if getattr(config, key) != getattr(self, key):
                bad.append(f"{key} {getattr(config, key)} (encoders: {getattr(self, key)})")
        seq = config.sequence
        for key in ("sample_rate", "hop_length", "latent_downsample", "clip_fps", "sync_fps"):
            if getattr(seq, key) != getattr(self.sequence, key):
                bad.append(f"sequence.{key} {getattr(seq, key)} (encoders: {getattr(self.sequence, key)})")
        if bad:
            raise ValueError(f"the model does not fit the '{self.name}' encoder set: " + "; ".join(bad))


def freeze(module: nn.Module) -> nn.Module:
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


def load_weights(path: str | Path, what: str, fetch_hint: str = "") -> dict[str, Tensor]:
    """A state dict from safetensors or a weights-only torch file, with errors that say what to do."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{what}: weights file {path} not found. {fetch_hint}".strip())
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{what}: {path} is not a readable weights file ({exc.__class__.__name__})") from exc


def load_strict(module: nn.Module, state: dict[str, Tensor], what: str) -> None:
    """Strict load with the first mismatches named (shared with network checkpoints)."""
    from soundvcm.network.checkpoint import load_state_dict_strict

    try:
        load_state_dict_strict(module, state, source=what)
    except ValueError as exc:
        raise WeightsError(str(exc)) from exc


def chunked(fn, x: Tensor, chunk: int) -> Tensor:
    """Apply ``fn`` over the first dimension in chunks (bounded memory for long clips)."""
    return torch.cat([fn(x[i : i + chunk]) for i in range(0, x.shape[0], chunk)], dim=0)


WEIGHT_NORM_SUFFIXES = (
    (".weight_g", ".weight_v"),  # torch.nn.utils.weight_norm
    (".parametrizations.weight.original0", ".parametrizations.weight.original1"),  # parametrizations.weight_norm
)


def fold_weight_norm(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """weight = g v / ||v|| for ``weight_g``/``weight_v`` and for parametrizations' ``original0/1``."""
    out: dict[str, Tensor] = {}
    pairs = {}
    for k, v in state.items():
        for g_suffix, v_suffix in WEIGHT_NORM_SUFFIXES:
            if k.endswith(g_suffix) or k.endswith(v_suffix):
                base = k[: -len(g_suffix)] if k.endswith(g_suffix) else k[: -len(v_suffix)]
                pairs.setdefault(base, {})["g" if k.endswith(g_suffix) else "v"] = v
                break
        else:
            out[k] = v
    for base, gv in pairs.items():
        if set(gv) != {"g", "v"}:
            raise WeightsError(f"weight-norm entry {base} has only its {''.join(gv)} part")
        v = gv["v"]
        out[base + ".weight"] = gv["g"] * v / v.norm(dim=tuple(range(1, v.dim())), keepdim=True)
    return out
