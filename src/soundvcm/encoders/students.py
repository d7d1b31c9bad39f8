"""Loading a distilled vocoder (``soundvcm vocoder export``: STEM.safetensors + STEM.json) as the
module its JSON's ``shape.kind`` names: ``hifigan`` (or none, as exported before issue 35) for a
HiFi-GAN-shaped student, ``istft`` for the frame-rate iSTFT vocoder
(:mod:`soundvcm.encoders.istft_vocoder`), ``trunk`` for V1's trunk with an iSTFT head
(:mod:`soundvcm.encoders.trunk_vocoder`)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from soundvcm.encoders.hifigan import FAST_VOCODER, HiFiGAN
from soundvcm.encoders.istft_vocoder import ISTFTVocoder
from soundvcm.encoders.trunk_vocoder import TrunkVocoder
from soundvcm.weights import load_export


def distilled_vocoder(stem: str | Path = FAST_VOCODER) -> nn.Module:
    """The frozen student at ``stem``, by its export's kind (module docstring)."""
    shape, state = load_export(stem, "vocoder")
    kind = shape.get("kind", "hifigan")
    if kind == "istft":
        return ISTFTVocoder.from_export(shape, state)
    if kind == "trunk":
        return TrunkVocoder.from_export(shape, state)
    return HiFiGAN.from_export(shape, state)
