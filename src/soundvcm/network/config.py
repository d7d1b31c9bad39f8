"""The network's configuration and the one table of named presets (no torch: the CLI lists them).

:class:`MMDiTConfig` holds the sizes and switches of the SoundVCM network (MMAudio's MMDiT with the
two-time embedding, :mod:`soundvcm.network.mmdit`); token lengths derive from its ``sequence``.
:data:`PRESETS` names each configuration together with the encoder set whose features it takes,
so a preset's name is all a run needs to build a network that fits its data; ``NETWORK_PRESETS``
and ``PRESET_ENCODERS`` are views of that table.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from soundvcm.sequence import SEQUENCE_16K, SEQUENCE_44K, SEQUENCE_LITE, SEQUENCE_LITE2, SequenceConfig


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

    @property
    def hidden_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def num_joint(self) -> int:
        return self.depth - self.fused_depth

    def __post_init__(self) -> None:
        if not 0 <= self.fused_depth < self.depth:
            raise ValueError(f"need 0 <= fused_depth < depth, got {self.fused_depth}, {self.depth}")


@dataclass(frozen=True)
class NetworkPreset:
    """A named network: its configuration and the encoder set it was sized for ("debug": tiny sizes,
    no real encoders)."""

    config: MMDiTConfig
    encoder_set: str


_SMALL_16K = MMDiTConfig()
_LARGE_44K = MMDiTConfig(latent_dim=40, num_heads=14, depth=21, fused_depth=14, sequence=SEQUENCE_44K)
# the lite encoder set's network (MiniLM text, EfficientNet-Lite0 frames, motion sync, mel latent):
# 27.9M parameters, sized to train on a few CPU cores
_LITE = MMDiTConfig(
    latent_dim=160,
    clip_dim=1280,
    sync_dim=128,
    text_dim=384,
    num_heads=4,
    depth=5,
    fused_depth=3,
    sequence=SEQUENCE_LITE,
)
# the shipped size: the lite network at hidden 128, 2 joint + 2 audio-only blocks, 4 s clips (8.2M parameters;
# sized by measurement to train on 2 CPU cores, docs/MODEL_CARD.md)
_LITE_SMALL = replace(_LITE, num_heads=2, depth=4, fused_depth=2, sequence=replace(SEQUENCE_LITE, duration=4.0))
# tiny, for tests and CPU smoke runs: every code path, seconds on a CPU
_DEBUG = MMDiTConfig(
    latent_dim=8,
    clip_dim=32,
    sync_dim=24,
    text_dim=16,
    text_seq_len=7,
    num_heads=2,
    head_dim=16,
    depth=3,
    fused_depth=1,
    sequence=SequenceConfig(duration=1.0),
)

PRESETS: dict[str, NetworkPreset] = {
    "small_16k": NetworkPreset(_SMALL_16K, "mmaudio_16k"),
    "small_44k": NetworkPreset(MMDiTConfig(latent_dim=40, sequence=SEQUENCE_44K), "mmaudio_44k"),
    "medium_44k": NetworkPreset(MMDiTConfig(latent_dim=40, num_heads=14, sequence=SEQUENCE_44K), "mmaudio_44k"),
    "large_44k": NetworkPreset(_LARGE_44K, "mmaudio_44k"),
    "large_44k_v2": NetworkPreset(replace(_LARGE_44K, v2=True), "mmaudio_44k"),
    "lite": NetworkPreset(_LITE, "lite"),
    "lite_small": NetworkPreset(_LITE_SMALL, "lite"),
    # the same network on the lite2 set: 192-d sync tokens, one per latent frame (issue 23); the shipped models
    "lite2_small": NetworkPreset(
        replace(_LITE_SMALL, sync_dim=192, sequence=replace(SEQUENCE_LITE2, duration=4.0)), "lite2"
    ),
    # the same network on lite3 (issue 33): lite2's conditions, a 20-channel learned mel latent
    "lite3_small": NetworkPreset(
        replace(_LITE_SMALL, latent_dim=20, sync_dim=192, sequence=replace(SEQUENCE_LITE2, duration=4.0)), "lite3"
    ),
    "debug": NetworkPreset(_DEBUG, "debug"),
    "debug_v2": NetworkPreset(replace(_DEBUG, v2=True), "debug"),
}
NETWORK_PRESETS: dict[str, MMDiTConfig] = {name: p.config for name, p in PRESETS.items()}
PRESET_ENCODERS: dict[str, str] = {name: p.encoder_set for name, p in PRESETS.items()}


def network_preset(name: str, **overrides) -> MMDiTConfig:
    """A named preset with fields replaced (e.g. feature dimensions of another encoder set)."""
    if name not in PRESETS:
        raise ValueError(f"unknown network preset {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name].config, **overrides)
