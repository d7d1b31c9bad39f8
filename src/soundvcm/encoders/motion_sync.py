"""The lite sync feature: motion energy on a patch grid at 25 fps (no learned weights).

Design (the lite stand-in for Synchformer's MotionFormer tokens, docs/ARCHITECTURE.md):

* Frames: 25 fps, grayscale, squashed to 64 x 64 (the whole picture, no crop).
* Per frame f: the absolute temporal difference |f - f_prev| (zero for the first frame),
  averaged over an 8 x 8 grid of 8 x 8-pixel cells: 64 motion energies in [0, 1].
* Tokens keep Synchformer's layout so the network is unchanged: segments of 16 frames with a
  step of 8, 8 tokens per segment, token j covering frames 2j and 2j + 1 of its segment. A token
  is the two frames' 64-cell energies, log-compressed: log1p(32 e), 128 values.

Onsets on screen (impacts, footsteps, a door slam) are bursts of motion energy in the cells
where they happen, at 40 ms resolution: the timing cue a V2A model needs for sync. It costs
microseconds per frame, has no weights, and any encoder set can swap in a learned head later.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from soundvcm.media.video import FrameSpec


class MotionSync(nn.Module):
    def __init__(
        self,
        size: int = 64,
        grid: int = 8,
        segment: int = 16,
        step: int = 8,
        tokens_per_segment: int = 8,
        gain: float = 32.0,
    ):
        super().__init__()
        if segment % tokens_per_segment:
            raise ValueError("segment frames must be a multiple of tokens per segment")
        self.size, self.grid, self.segment, self.step = size, grid, segment, step
        self.tokens = tokens_per_segment
        self.frames_per_token = segment // tokens_per_segment
        self.gain = gain
        self.register_buffer("_device_probe", torch.zeros(()), persistent=False)

    @property
    def dim(self) -> int:
        return self.grid * self.grid * self.frames_per_token

    def frame_spec(self, fps: float = 25.0) -> FrameSpec:
        return FrameSpec(fps=fps, height=self.size, width=self.size, fit="squash", gray=True)

    def num_segments(self, num_frames: int) -> int:
        return max((num_frames - self.segment) // self.step + 1, 0)

    @torch.inference_mode()
    def forward(self, frames: Tensor) -> Tensor:
        """uint8 (B, T, 1, H, W) at 25 fps -> (B, S * tokens, dim) with S = (T - 16) // 8 + 1."""
        b, t = frames.shape[:2]
        segs = self.num_segments(t)
        if segs < 1:
            raise ValueError(f"sync features need at least {self.segment} frames, got {t}")
        x = frames.to(self._device_probe.device).float().div(255.0)
        if x.shape[2] != 1:
            x = x.mean(dim=2, keepdim=True)
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x.flatten(0, 1), size=(self.size, self.size), mode="area").unflatten(0, (b, t))
        diff = (x - torch.cat([x[:, :1], x[:, :-1]], dim=1)).abs()  # |f - f_prev|, (B, T, 1, H, W)
        energy = F.adaptive_avg_pool2d(diff.flatten(0, 1), self.grid).view(b, t, self.grid * self.grid)
        energy = torch.log1p(self.gain * energy)
        index = torch.stack(
            [
                torch.arange(self.segment, device=x.device).view(self.tokens, self.frames_per_token) + k * self.step
                for k in range(segs)
            ]
        )  # (S, tokens, frames_per_token)
        tokens = energy[:, index]  # (B, S, tokens, frames_per_token, cells)
        return tokens.flatten(3).flatten(1, 2)
