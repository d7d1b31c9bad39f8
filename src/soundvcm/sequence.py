"""Sequence lengths derived from duration, sample rate and frame rates (never stored twice).

An audio latent frame covers ``hop * latent_downsample`` samples; CLIP frames run at 8 fps;
Synchformer sees 16-frame segments of 25 fps video with a step of 8 and yields 8 tokens per
segment. For 8 s: 250 latents at 16 kHz (hop 256), 345 at 44.1 kHz (hop 512), 64 CLIP
frames, 192 sync tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class SequenceConfig:
    duration: float = 8.0
    sample_rate: int = 16_000
    hop_length: int = 256
    latent_downsample: int = 2
    clip_fps: float = 8.0
    sync_fps: float = 25.0
    sync_segment_frames: int = 16
    sync_step: int = 8
    sync_tokens_per_segment: int = 8

    def __post_init__(self) -> None:
        if self.duration <= 0:
            raise ValueError(f"duration must be positive, got {self.duration}")
        if self.duration * self.sync_fps < self.sync_segment_frames:
            raise ValueError(
                f"duration {self.duration} s is shorter than one sync segment "
                f"({self.sync_segment_frames} frames at {self.sync_fps} fps)"
            )

    @property
    def latent_seq_len(self) -> int:
        return int(math.ceil(self.duration * self.sample_rate / self.hop_length / self.latent_downsample))

    @property
    def num_audio_samples(self) -> int:
        """Samples covered by the latent sequence (a whole number of latents)."""
        return self.latent_seq_len * self.hop_length * self.latent_downsample

    @property
    def clip_seq_len(self) -> int:
        return int(self.duration * self.clip_fps)

    @property
    def num_sync_segments(self) -> int:
        frames = self.duration * self.sync_fps
        return int((frames - self.sync_segment_frames) // self.sync_step + 1)

    @property
    def sync_seq_len(self) -> int:
        return self.num_sync_segments * self.sync_tokens_per_segment

    def with_duration(self, duration: float) -> SequenceConfig:
        return replace(self, duration=duration)


SEQUENCE_16K = SequenceConfig()
SEQUENCE_44K = SequenceConfig(sample_rate=44_100, hop_length=512)
# the lite encoder set: HiFi-GAN's 22.05 kHz mel (hop 256), two mel frames per latent -> 345 for 8 s
SEQUENCE_LITE = SequenceConfig(sample_rate=22_050, hop_length=256)
