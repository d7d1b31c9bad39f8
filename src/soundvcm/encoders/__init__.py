"""Encoder sets: frames, text and audio to the network's conditions and latents, and back.

``ENCODER_SPECS`` holds each set's dimensions (enough to build a matching network without any
weights); :func:`load_encoder_set` builds the modules. Sets:

* ``lite``: real offline weights from pip packages (MiniLM, EfficientNet-Lite0, motion-energy
  sync, HiFi-GAN mel); runs and is tested here.
* ``mmaudio_16k`` / ``mmaudio_44k``: the paper's set (CLIP DFN5B ViT-H-14-384, Synchformer,
  mel VAE, BigVGAN). Their dimensions and weight registry entries are defined; the modules are
  not implemented yet, and loading says so.
"""

from __future__ import annotations

import torch

from soundvcm.encoders.base import EncoderSetSpec, WeightsError
from soundvcm.encoders.lite import LITE_SPEC, LiteEncoderSet
from soundvcm.media.video import FrameSpec
from soundvcm.sequence import SEQUENCE_16K, SEQUENCE_44K

_CLIP_FRAMES = FrameSpec(fps=8.0, height=384, width=384, fit="squash")
_SYNC_FRAMES = FrameSpec(fps=25.0, height=224, width=224, fit="crop")
ENCODER_SPECS: dict[str, EncoderSetSpec] = {
    "lite": LITE_SPEC,
    "mmaudio_16k": EncoderSetSpec("mmaudio_16k", 1024, 768, 1024, 77, 20, SEQUENCE_16K, _CLIP_FRAMES, _SYNC_FRAMES),
    "mmaudio_44k": EncoderSetSpec("mmaudio_44k", 1024, 768, 1024, 77, 40, SEQUENCE_44K, _CLIP_FRAMES, _SYNC_FRAMES),
}


def encoder_spec(name: str) -> EncoderSetSpec:
    if name not in ENCODER_SPECS:
        raise ValueError(f"unknown encoder set '{name}'; choose one of {sorted(ENCODER_SPECS)}")
    return ENCODER_SPECS[name]


def load_encoder_set(name: str, device: str | torch.device = "cpu", pretrained: bool = True):
    """Build an encoder set on ``device`` (frozen, eval)."""
    encoder_spec(name)
    if name == "lite":
        return LiteEncoderSet(pretrained=pretrained).to(device)
    raise WeightsError(
        f"the '{name}' encoder set (CLIP DFN5B, Synchformer, mel VAE, BigVGAN) is not implemented in this "
        "version; use a model trained with the 'lite' encoder set (see `soundvcm weights list` for the files)"
    )


__all__ = ["ENCODER_SPECS", "EncoderSetSpec", "WeightsError", "encoder_spec", "load_encoder_set"]
