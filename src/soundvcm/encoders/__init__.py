"""Encoder sets: frames, text and audio to the network's conditions and latents, and back.

``ENCODER_SPECS`` holds each set's dimensions (enough to build a matching network without any
weights); :func:`load_encoder_set` builds the modules. Sets:

* ``lite``: real offline weights from pip packages (MiniLM, EfficientNet-Lite0, motion-energy
  sync, HiFi-GAN mel); runs and is tested here end to end.
* ``lite2``: the same weights; visual frames at 160 px and time-ordered signed-motion sync
  tokens, one per latent frame (issue 23); the set the shipped models are trained on.
* ``mmaudio_16k`` / ``mmaudio_44k``: the paper's set (CLIP DFN5B ViT-H-14-384, Synchformer's
  MotionFormer, mel VAE, BigVGAN), our own modules loading the official files from the weight
  registry (``soundvcm weights download ...``).
"""

from __future__ import annotations

import torch

from soundvcm.encoders.base import EncoderSetSpec
from soundvcm.encoders.lite import LITE_SPECS
from soundvcm.encoders.mmaudio_set import MMAUDIO_SPECS
from soundvcm.precision import PrecisionPlan, resolve_precision
from soundvcm.weights import WeightsError

ENCODER_SPECS: dict[str, EncoderSetSpec] = {
    **LITE_SPECS,
    "mmaudio_16k": MMAUDIO_SPECS["16k"],
    "mmaudio_44k": MMAUDIO_SPECS["44k"],
}


def encoder_spec(name: str) -> EncoderSetSpec:
    if name not in ENCODER_SPECS:
        raise ValueError(f"unknown encoder set '{name}'; choose one of {sorted(ENCODER_SPECS)}")
    return ENCODER_SPECS[name]


def load_encoder_set(
    name: str,
    device: str | torch.device = "cpu",
    pretrained: bool = True,
    precision: str | PrecisionPlan = "auto",
    vocoder: str = "auto",
):
    """Build an encoder set on ``device`` (frozen, eval), each stage in the precision ``precision``
    resolves to there (:func:`soundvcm.precision.resolve_precision`); ``vocoder``: auto, fast,
    hifigan or a distilled vocoder's path (lite sets; :func:`soundvcm.encoders.lite.load_vocoder`)."""
    encoders = _build(name, device, pretrained, vocoder)
    plan = precision if isinstance(precision, PrecisionPlan) else resolve_precision(precision, device)
    encoders.set_precision(plan)
    return encoders


def _build(name: str, device: str | torch.device, pretrained: bool, vocoder: str = "auto"):
    spec = encoder_spec(name)
    spec.check_vocoder(vocoder)
    if spec.build is None:  # a set registered by hand (tests, experiments) brings its own encoders
        raise ValueError(f"encoder set '{name}' has no loader here; pass its encoders explicitly")
    return spec.build(device, pretrained, vocoder)


__all__ = ["ENCODER_SPECS", "EncoderSetSpec", "WeightsError", "encoder_spec", "load_encoder_set"]
