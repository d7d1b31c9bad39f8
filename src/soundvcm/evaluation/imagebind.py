"""ImageBind-Huge's audio and vision encoders for av-benchmark's IB-Score, our own module.

* Vision: 2-frame clips of 224 x 224 (an image is repeated to 2 frames), a Conv3d stem with
  (2, 14, 14) patches (no bias) -> 256 tokens + class token with a learned position embedding,
  a LayerNorm, 32 pre-norm blocks of width 1280 (16 heads, GELU MLP x4, LayerNorm eps 1e-6), head:
  LayerNorm, class token, Linear to 1024 (no bias); L2-normalised. Clips of a video are averaged.
* Audio: 2 s clips as Kaldi fbank (128 bins, 25 ms / 10 ms, Hann, pre-emphasis 0.97, per-frame DC
  removal, power, log), 204 frames, (x + 4.268) / 9.138; a Conv2d stem (16 x 16 patches, stride
  10, no bias) + LayerNorm -> 12 x 19 tokens + class token, 12 blocks of width 768 whose attention
  has learned key/value bias tokens, the same head to 1024, L2-normalised (then x20, irrelevant for
  cosines). Clips are averaged.

IB-Score = 100 x mean cosine(video embedding, audio embedding). Weights: ``imagebind_huge.pth``
(registry name ``imagebind_huge``). The file holds all six modalities; the vision and audio
parts (and their heads and post-processors) are checked key by key and loaded strictly, the
entries of the other modalities (text, depth, thermal, IMU) are recognised by prefix and skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from soundvcm.encoders.base import freeze, to_float_frames
from soundvcm.encoders.clip import OPENAI_MEAN, OPENAI_STD
from soundvcm.encoders.layers import PackedAttention
from soundvcm.media.mel import kaldi_fbank
from soundvcm.weights import WeightFile, WeightsError, load_strict, load_weights, module_shapes

AUDIO_MEAN, AUDIO_STD = -4.268, 9.138
OTHER_MODALITIES = ("text", "depth", "thermal", "imu")


@dataclass(frozen=True)
class ImageBindConfig:
    vision_dim: int = 1280
    vision_blocks: int = 32
    vision_heads: int = 16
    audio_dim: int = 768
    audio_blocks: int = 12
    audio_heads: int = 12
    out_dim: int = 1024
    image_size: int = 224
    patch: int = 14
    mel_bins: int = 128
    audio_frames: int = 204


class Block(nn.Module):
    def __init__(self, d: int, heads: int, bias_kv: bool):
        super().__init__()
        self.attn = PackedAttention(d, heads, bias_kv)
        self.norm_1 = nn.LayerNorm(d, eps=1e-6)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(d, 4 * d)
        self.mlp.fc2 = nn.Linear(4 * d, d)
        self.norm_2 = nn.LayerNorm(d, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm_1(x))
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm_2(x))))


def _trunk(d: int, blocks: int, heads: int, pre_ln: bool, bias_kv: bool) -> nn.Module:
    trunk = nn.Module()
    trunk.pre_transformer_layer = nn.Sequential(nn.LayerNorm(d, eps=1e-6) if pre_ln else nn.Identity())
    trunk.blocks = nn.Sequential(*[Block(d, heads, bias_kv) for _ in range(blocks)])
    return trunk


def _head(d: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(d, eps=1e-6), nn.Identity(), nn.Linear(d, out, bias=False))


class _Scale(nn.Module):
    def __init__(self, init: float):
        super().__init__()
        self.register_buffer("log_logit_scale", torch.tensor(math.log(init)))


class ImageBind(nn.Module):
    """Key names of ``imagebind_huge.pth`` for the vision and audio modalities."""

    def __init__(self, c: ImageBindConfig = ImageBindConfig()):
        super().__init__()
        self.config = c
        grid = c.image_size // c.patch
        vision = nn.Module()
        vision.rgbt_stem = nn.Module()
        vision.rgbt_stem.proj = nn.Sequential(
            nn.Identity(), nn.Conv3d(3, c.vision_dim, (2, c.patch, c.patch), stride=(2, c.patch, c.patch), bias=False)
        )
        vision.cls_token = nn.Parameter(torch.zeros(1, 1, c.vision_dim))
        vision.pos_embedding_helper = nn.Module()
        vision.pos_embedding_helper.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, c.vision_dim))
        f = (c.mel_bins - 16) // 10 + 1
        t = (c.audio_frames - 16) // 10 + 1
        audio = nn.Module()
        audio.rgbt_stem = nn.Module()
        audio.rgbt_stem.proj = nn.Conv2d(1, c.audio_dim, 16, stride=10, bias=False)
        audio.rgbt_stem.norm_layer = nn.LayerNorm(c.audio_dim)
        audio.cls_token = nn.Parameter(torch.zeros(1, 1, c.audio_dim))
        audio.pos_embedding_helper = nn.Module()
        audio.pos_embedding_helper.pos_embed = nn.Parameter(torch.zeros(1, f * t + 1, c.audio_dim))
        self.modality_preprocessors = nn.ModuleDict({"vision": vision, "audio": audio})
        self.modality_trunks = nn.ModuleDict(
            {
                "vision": _trunk(c.vision_dim, c.vision_blocks, c.vision_heads, pre_ln=True, bias_kv=False),
                "audio": _trunk(c.audio_dim, c.audio_blocks, c.audio_heads, pre_ln=False, bias_kv=True),
            }
        )
        self.modality_heads = nn.ModuleDict(
            {"vision": _head(c.vision_dim, c.out_dim), "audio": _head(c.audio_dim, c.out_dim)}
        )
        self.modality_postprocessors = nn.ModuleDict(
            {"vision": nn.Identity(), "audio": nn.Sequential(nn.Identity(), _Scale(20.0))}
        )

    def _encode(self, modality: str, tokens: Tensor) -> Tensor:
        pre = self.modality_preprocessors[modality]
        x = torch.cat([pre.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        x = x + pre.pos_embedding_helper.pos_embed
        trunk = self.modality_trunks[modality]
        x = trunk.blocks(trunk.pre_transformer_layer(x))
        head = self.modality_heads[modality]
        return F.normalize(head[2](head[0](x)[:, 0]), dim=-1)

    def encode_vision(self, clips: Tensor) -> Tensor:
        """(N, 3, 2, 224, 224) normalised clips (or (N, 3, 224, 224) images) -> (N, 1024), unit norm."""
        if clips.ndim == 4:
            clips = clips[:, :, None].repeat(1, 1, 2, 1, 1)
        tokens = self.modality_preprocessors["vision"].rgbt_stem.proj(clips).flatten(2).transpose(1, 2)
        return self._encode("vision", tokens)

    def encode_audio(self, fbanks: Tensor) -> Tensor:
        """(N, 1, 128, 204) normalised fbank clips -> (N, 1024), unit norm."""
        stem = self.modality_preprocessors["audio"].rgbt_stem
        tokens = stem.norm_layer(stem.proj(fbanks).flatten(2).transpose(1, 2))
        return self._encode("audio", tokens)


def audio_clips(wave: Tensor, sr: int = 16_000, clips: int = 3, seconds: float = 2.0, frames: int = 204) -> Tensor:
    """(samples,) at 16 kHz -> (clips, 1, 128, 204): ImageBind's ConstantClipsPerVideoSampler (clip k
    starts at k (duration - 2) / (clips - 1) s), per-clip mean removal, fbank, pad/cut, normalise."""
    n = int(sr * seconds)
    wave = F.pad(wave, (0, max(0, n - wave.numel())))
    duration = wave.numel() / sr
    out = []
    for k in range(clips):
        start = k * max(duration - seconds, 0.0) / max(clips - 1, 1)
        clip = wave[int(start * sr) : int((start + seconds) * sr)]
        fb = kaldi_fbank(clip - clip.mean()).T  # (128, T)
        fb = F.pad(fb, (0, max(0, frames - fb.shape[1])))[:, :frames]
        out.append((fb - AUDIO_MEAN) / AUDIO_STD)
    return torch.stack(out)[:, None]


VIDEO_FPS = 0.5  # av-benchmark samples ImageBind frames at 0.5 fps


def video_clips(frames: Tensor) -> Tensor:
    """uint8 (T, 3, H, W) at 0.5 fps, short side 224 -> (3 (T - 1), 3, 2, 224, 224), CLIP-normalised:
    every pair of consecutive frames, each in three crops (left/centre/right, or top/centre/bottom)."""
    x = to_float_frames(frames, OPENAI_MEAN, OPENAI_STD)
    h, w = x.shape[-2:]
    crops = []
    for k in range(3):  # av-benchmark's uniform_crop offsets (ceil for the centre)
        if w >= h:
            left = [0, math.ceil((w - 224) / 2), w - 224][k]
            crops.append(x[..., :224, left : left + 224])
        else:
            top = [0, math.ceil((h - 224) / 2), h - 224][k]
            crops.append(x[..., top : top + 224, :224])
    out = [crop[i : i + 2].transpose(0, 1) for i in range(x.shape[0] - 1) for crop in crops]
    if not out:
        raise ValueError("ImageBind needs at least 2 frames at 0.5 fps (4 s of video)")
    return torch.stack(out)


def load_imagebind(path) -> ImageBind:
    state = load_weights(path, "ImageBind")
    net = ImageBind()
    ours = set(net.state_dict())
    other = [k for k in state if k not in ours and k.split(".")[1:2] and k.split(".")[1] in OTHER_MODALITIES]
    subset = {k: v for k, v in state.items() if k not in other}
    if not other:
        raise WeightsError("ImageBind: the file has no text/depth/thermal/IMU entries; is it imagebind_huge.pth?")
    load_strict(net, subset, "ImageBind (vision + audio)")
    return freeze(net)


def _used_modalities(state: dict) -> dict:
    """The file holds six modalities; we use vision and audio."""
    return {k: v for k, v in state.items() if not (len(k.split(".")) > 1 and k.split(".")[1] in OTHER_MODALITIES)}


IMAGEBIND_WEIGHTS = WeightFile(
    "imagebind_huge",
    "imagebind_huge.pth",
    "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth",
    None,
    "ImageBind-Huge (IB-Score; its vision and audio parts are used)",
    shapes=lambda: module_shapes(ImageBind()),
    prepare=_used_modalities,
)
