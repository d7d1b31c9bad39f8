"""Sequence lengths derived from duration, sample rate and frame rates (never stored twice).

An audio latent frame covers ``hop * latent_downsample`` samples; CLIP frames run at 8 fps.
Two layouts of the sync tokens:

* ``segments`` (MMAudio's, for Synchformer): 16-frame segments of 25 fps video with a step of 8,
  8 tokens per segment. The segments overlap, so the tokens run back and forth in time; the
  network spreads them evenly over the latent. For 8 s: 250 latents at 16 kHz (hop 256), 345 at
  44.1 kHz (hop 512), 64 CLIP frames, 192 sync tokens.
* ``frames`` (the lite2 set): one token per latent frame, in time order, made from
  ``sync_segment_frames`` video samples taken at ``sync_fps`` = that many per latent frame. Token
  k covers exactly latent k's span, so timing survives into the network (issue 23).
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
    sync_segment_frames: int = 16  # "frames" layout: video samples per token
    sync_step: int = 8
    sync_tokens_per_segment: int = 8
    sync_layout: str = "segments"  # or "frames": one sync token per latent frame (see the module docstring)

    def __post_init__(self) -> None:
        if self.duration <= 0:
            raise ValueError(f"duration must be positive, got {self.duration}")
        if self.sync_layout not in ("segments", "frames"):
            raise ValueError(f"sync_layout must be 'segments' or 'frames', got {self.sync_layout!r}")
        if self.duration < self.min_duration - 1e-9:
            raise ValueError(f"duration {self.duration} s is shorter than the shortest clip, {self.min_duration:.3f} s")

    @property
    def latent_rate(self) -> float:
        """Latent frames per second."""
        return self.sample_rate / (self.hop_length * self.latent_downsample)

    @property
    def min_duration(self) -> float:
        """The shortest clip: one sync segment (segments layout), or one visual frame (frames layout)."""
        if self.sync_layout == "frames":
            return max(1.0 / self.clip_fps, 1.0 / self.latent_rate)
        return self.sync_segment_frames / self.sync_fps

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
        if self.sync_layout == "frames":
            return self.latent_seq_len
        frames = self.duration * self.sync_fps
        return int((frames - self.sync_segment_frames) // self.sync_step + 1)

    @property
    def sync_seq_len(self) -> int:
        return self.num_sync_segments * self.sync_tokens_per_segment

    @property
    def sync_frames_needed(self) -> int:
        """Video samples at ``sync_fps`` the sync encoder takes for this duration (a video that ends
        inside the last latent frame is padded by its last frame)."""
        if self.sync_layout == "frames":
            return self.latent_seq_len * self.sync_segment_frames
        return (self.num_sync_segments - 1) * self.sync_step + self.sync_segment_frames

    def with_duration(self, duration: float) -> SequenceConfig:
        return replace(self, duration=duration)


SEQUENCE_16K = SequenceConfig()
SEQUENCE_44K = SequenceConfig(sample_rate=44_100, hop_length=512)
# the lite encoder set: HiFi-GAN's 22.05 kHz mel (hop 256), two mel frames per latent -> 345 for 8 s
SEQUENCE_LITE = SequenceConfig(sample_rate=22_050, hop_length=256)
# lite2: the same latent, and one sync token per latent frame from 2 video samples at 86.13 fps
SEQUENCE_LITE2 = SequenceConfig(
    sample_rate=22_050,
    hop_length=256,
    sync_fps=2 * 22_050 / 512,
    sync_segment_frames=2,
    sync_step=2,
    sync_tokens_per_segment=1,
    sync_layout="frames",
)


def window_starts(total: float, window: float, overlap: float) -> list[float]:
    """Start times of the windows of ``window`` seconds, overlapping by ``overlap``, that cover a
    ``total``-second video (the last one may be shorter)."""
    if not 0 <= overlap < window / 2:
        raise ValueError(f"overlap must be in [0, window / 2), got {overlap}")
    starts = [0.0]
    while starts[-1] + window < total - 1e-3:
        starts.append(starts[-1] + window - overlap)
    return starts
