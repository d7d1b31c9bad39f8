"""What a network must agree with, defined once per encoder set (no torch; issue 36).

A :class:`FeatureSizes` holds an encoder set's feature widths, its text length and its audio
timeline (:class:`soundvcm.sequence.SequenceConfig`: rates, sync layout; sequence lengths are a
pure function of the duration). Both sides read it from here and nothing restates a size: the
encoder set's spec (:class:`soundvcm.encoders.base.EncoderSetSpec` spreads it) and the network
presets (:func:`soundvcm.network.config.network_config` builds a network from a
:class:`~soundvcm.network.config.NetworkSize` and a ``FeatureSizes``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from soundvcm.sequence import SEQUENCE_16K, SEQUENCE_44K, SEQUENCE_LITE, SEQUENCE_LITE2, SequenceConfig


@dataclass(frozen=True)
class FeatureSizes:
    """An encoder set's name, feature widths and timeline."""

    name: str
    clip_dim: int  # visual features per clip frame
    sync_dim: int  # sync features per sync token
    text_dim: int  # text features per token
    text_seq_len: int  # text tokens
    latent_dim: int  # audio latent channels per latent frame
    sequence: SequenceConfig  # rates and layout; lengths follow the duration


# MMAudio's sets: CLIP ViT-H-14-384, Synchformer, CLIP text; the 16 kHz / 44.1 kHz mel VAE
MMAUDIO_16K = FeatureSizes("mmaudio_16k", 1024, 768, 1024, 77, 20, SEQUENCE_16K)
MMAUDIO_44K = FeatureSizes("mmaudio_44k", 1024, 768, 1024, 77, 40, SEQUENCE_44K)
# the lite sets: EfficientNet-Lite0 frames, MiniLM text, motion sync, 2 x 80 mel bands per latent frame
LITE = FeatureSizes("lite", 1280, 128, 384, 77, 160, SEQUENCE_LITE)
LITE2 = FeatureSizes("lite2", 1280, 192, 384, 77, 160, SEQUENCE_LITE2)  # one sync token per latent frame
LITE3 = replace(LITE2, name="lite3", latent_dim=20)  # lite2's conditions, a 20-channel mel VAE latent (issue 33)
# tiny sizes for tests and smoke runs: no encoder set builds them (tests bring their own encoders)
DEBUG = FeatureSizes("debug", 32, 24, 16, 7, 8, SequenceConfig(duration=1.0))
