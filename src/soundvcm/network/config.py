"""The network's configuration and the one table of named presets (no torch: the CLI lists them).

:class:`MMDiTConfig` holds the sizes and switches of the SoundVCM network (MMAudio's MMDiT with the
two-time embedding, :mod:`soundvcm.network.mmdit`); token lengths derive from its ``sequence``.
:data:`PRESETS` names each network as a :class:`NetworkSize` and the encoder set whose features it
takes (:mod:`soundvcm.features`); its config is a function of the two (:func:`network_config`), so a
preset's name is all a run needs to build a network that fits its data. ``NETWORK_PRESETS`` and
``PRESET_ENCODERS`` are views of that table.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from soundvcm import features
from soundvcm.features import FeatureSizes
from soundvcm.sequence import SEQUENCE_16K, SequenceConfig


@dataclass(frozen=True)
class MMDiTConfig:
    """Sizes and switches of the network; token lengths come from ``sequence``."""

    latent_dim: int = 20
    clip_dim: int = 1024
    sync_dim: int = 768
    text_dim: int = 1024
    text_seq_len: int = 77
    num_heads: int = 7
    head_dim: int = 64
    depth: int = 12
    fused_depth: int = 8
    mlp_ratio: float = 4.0
    sequence: SequenceConfig = field(default_factory=lambda: SEQUENCE_16K)
    v2: bool = False  # MMAudio-v2 projections (SiLU) and t-embedding (F = D, max_period 1)
    offset_embedding: bool = True  # SoundVCM's second time embedding for s - t (§3.5.2)
    final_uses_extended: bool = True  # fix of MMAudio issue #55; False for MMAudio parity
    mmaudio_time: bool = False  # weights trained in MMAudio's convention (t = 1 is data)
    t_freq_dim: int = 256
    t_max_period: float = 1e4
    # latent frames per audio token (issue 33, step 3: width against token count); 1 = MMAudio's
    patch: int = 1

    @property
    def hidden_dim(self) -> int:
        return self.num_heads * self.head_dim

    def audio_tokens(self, frames: int) -> int:
        """Audio tokens for ``frames`` latent frames: ``patch`` frames each, the last one padded."""
        return -(-frames // self.patch)

    @property
    def num_joint(self) -> int:
        return self.depth - self.fused_depth

    def __post_init__(self) -> None:
        if not 0 <= self.fused_depth < self.depth:
            raise ValueError(f"need 0 <= fused_depth < depth, got {self.fused_depth}, {self.depth}")
        if self.patch < 1:
            raise ValueError(f"need patch >= 1 latent frames per token, got {self.patch}")


@dataclass(frozen=True)
class NetworkSize:
    """How big a network is, apart from what its encoder set decides (issue 36): heads, head width,
    blocks (joint + audio-only), its clip length (None: the encoder set's timeline's own) and
    MMAudio-v2's switch."""

    num_heads: int
    depth: int
    fused_depth: int
    head_dim: int = 64
    duration: float | None = None
    v2: bool = False
    patch: int = 1


def network_config(size: NetworkSize, features: FeatureSizes) -> MMDiTConfig:
    """The network of ``size`` that takes ``features``' conditions and latents: every feature width and
    the timeline come from the encoder set, nothing is restated."""
    sequence = features.sequence if size.duration is None else replace(features.sequence, duration=size.duration)
    return MMDiTConfig(
        latent_dim=features.latent_dim,
        clip_dim=features.clip_dim,
        sync_dim=features.sync_dim,
        text_dim=features.text_dim,
        text_seq_len=features.text_seq_len,
        num_heads=size.num_heads,
        head_dim=size.head_dim,
        depth=size.depth,
        fused_depth=size.fused_depth,
        sequence=sequence,
        v2=size.v2,
        patch=size.patch,
    )


@dataclass(frozen=True)
class NetworkPreset:
    """A named network: its size and the encoder set whose features it takes ("debug": tiny sizes,
    no real encoders)."""

    size: NetworkSize
    features: FeatureSizes

    @property
    def config(self) -> MMDiTConfig:
        return network_config(self.size, self.features)

    @property
    def encoder_set(self) -> str:
        return self.features.name


# MMAudio's sizes (S: 7 heads x 64, 12 blocks of which 8 audio-only; M: 14 heads; L: 14 heads, 21 blocks)
_S, _M, _L = NetworkSize(7, 12, 8), NetworkSize(14, 12, 8), NetworkSize(14, 21, 14)
# the lite network, sized to train on a few CPU cores (27.9M parameters on the lite set)
_LITE = NetworkSize(num_heads=4, depth=5, fused_depth=3)
# the shipped size: hidden 128, 2 joint + 2 audio-only blocks, 4 s clips (8.2-8.3M parameters; sized by
# measurement to train on 2 CPU cores, docs/MODEL_CARD.md)
_LITE_SMALL = NetworkSize(num_heads=2, depth=4, fused_depth=2, duration=4.0)
# tiny, for tests and CPU smoke runs: every code path, seconds on a CPU
_DEBUG = NetworkSize(num_heads=2, depth=3, fused_depth=1, head_dim=16)

PRESETS: dict[str, NetworkPreset] = {
    "small_16k": NetworkPreset(_S, features.MMAUDIO_16K),
    "small_44k": NetworkPreset(_S, features.MMAUDIO_44K),
    "medium_44k": NetworkPreset(_M, features.MMAUDIO_44K),
    "large_44k": NetworkPreset(_L, features.MMAUDIO_44K),
    "large_44k_v2": NetworkPreset(replace(_L, v2=True), features.MMAUDIO_44K),
    "lite": NetworkPreset(_LITE, features.LITE),
    "lite_small": NetworkPreset(_LITE_SMALL, features.LITE),
    # the same network on lite2 (one sync token per latent frame, issue 23): the shipped models
    "lite2_small": NetworkPreset(_LITE_SMALL, features.LITE2),
    # the same network on lite3 (issue 33): lite2's conditions, a 20-channel learned mel latent
    "lite3_small": NetworkPreset(_LITE_SMALL, features.LITE3),
    # issue 33, step 3: width against token count at about the same cost per step: 3 heads (192 wide)
    # over half as many audio tokens (two latent frames per token)
    "lite3_wide_patch2": NetworkPreset(replace(_LITE_SMALL, num_heads=3, patch=2), features.LITE3),
    "debug": NetworkPreset(_DEBUG, features.DEBUG),
    "debug_v2": NetworkPreset(replace(_DEBUG, v2=True), features.DEBUG),
}
NETWORK_PRESETS: dict[str, MMDiTConfig] = {name: p.config for name, p in PRESETS.items()}
PRESET_ENCODERS: dict[str, str] = {name: p.encoder_set for name, p in PRESETS.items()}


def network_preset(name: str, **overrides) -> MMDiTConfig:
    """A named preset with fields replaced (e.g. feature dimensions of another encoder set)."""
    if name not in PRESETS:
        raise ValueError(f"unknown network preset {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name].config, **overrides)
