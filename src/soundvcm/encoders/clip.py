"""CLIP DFN5B ViT-H-14 at 384 px (image and text), our own module with open_clip's key names.

* Image: 14 x 14 patches of a 384 x 384 frame (27 x 27 = 729 tokens + a class token), 32
  pre-LayerNorm blocks of width 1280 (16 heads) with QuickGELU MLPs, LayerNorm on the class
  token, projection to 1024, L2-normalised: ``encode_image`` (B, 3, 384, 384) -> (B, 1024).
  Frames are squashed to 384 x 384 (bicubic) and normalised with OpenAI's mean/std.
* Text: 77 BPE tokens, 24 causal blocks of width 1024 (16 heads), final LayerNorm. As in
  MMAudio's ``patch_clip``, ``encode_text`` returns all 77 ``ln_final`` states, each
  L2-normalised (no text projection): (B, 77, 1024).

Weights: ``open_clip_pytorch_model.bin`` of ``apple/DFN5B-CLIP-ViT-H-14-384`` (weights registry
name ``clip_dfn5b``), loaded strictly with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from soundvcm.encoders.layers import PackedAttention
from soundvcm.weights import WeightFile, module_shapes

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class CLIPConfig:
    embed_dim: int = 1024
    image_size: int = 384
    patch_size: int = 14
    vision_width: int = 1280
    vision_layers: int = 32
    vision_head_width: int = 80
    context_length: int = 77
    vocab_size: int = 49408
    text_width: int = 1024
    text_heads: int = 16
    text_layers: int = 24

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


DFN5B_VIT_H_14_384 = CLIPConfig()


class QuickGELU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = PackedAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, 4 * width))
        self.mlp.add_module("gelu", QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(4 * width, width))

    def forward(self, x: Tensor, causal: bool = False) -> Tensor:
        x = x + self.attn(self.ln_1(x), causal)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualBlock(width, heads) for _ in range(layers))

    def forward(self, x: Tensor, causal: bool = False) -> Tensor:
        for block in self.resblocks:
            x = block(x, causal)
        return x


class VisionTower(nn.Module):
    def __init__(self, c: CLIPConfig):
        super().__init__()
        w = c.vision_width
        self.conv1 = nn.Conv2d(3, w, c.patch_size, stride=c.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(w) * w**-0.5)
        self.positional_embedding = nn.Parameter(torch.randn(c.grid**2 + 1, w) * w**-0.5)
        self.ln_pre = nn.LayerNorm(w)
        self.transformer = Transformer(w, c.vision_layers, w // c.vision_head_width)
        self.ln_post = nn.LayerNorm(w)
        self.proj = nn.Parameter(torch.randn(w, c.embed_dim) * w**-0.5)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x).flatten(2).transpose(1, 2)  # (B, grid^2, W)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0]) @ self.proj


class CLIP(nn.Module):
    def __init__(self, config: CLIPConfig = DFN5B_VIT_H_14_384):
        super().__init__()
        self.config = config
        self.visual = VisionTower(config)
        self.token_embedding = nn.Embedding(config.vocab_size, config.text_width)
        self.positional_embedding = nn.Parameter(torch.randn(config.context_length, config.text_width) * 0.01)
        self.transformer = Transformer(config.text_width, config.text_layers, config.text_heads)
        self.ln_final = nn.LayerNorm(config.text_width)
        self.text_projection = nn.Parameter(torch.randn(config.text_width, config.embed_dim) * config.text_width**-0.5)
        self.logit_scale = nn.Parameter(torch.tensor(4.6052))

    def encode_image(self, pixels: Tensor) -> Tensor:
        """(B, 3, S, S) normalised pixels -> (B, embed_dim), L2-normalised."""
        return F.normalize(self.visual(pixels), dim=-1)

    def encode_text(self, tokens: Tensor) -> Tensor:
        """(B, 77) token ids -> (B, 77, text_width): every ln_final state, L2-normalised (MMAudio)."""
        x = self.token_embedding(tokens) + self.positional_embedding
        x = self.ln_final(self.transformer(x, causal=True))
        return F.normalize(x, dim=-1)


CLIP_WEIGHTS = WeightFile(
    "clip_dfn5b",
    "DFN5B-CLIP-ViT-H-14-384.bin",
    "https://huggingface.co/apple/DFN5B-CLIP-ViT-H-14-384/resolve/main/open_clip_pytorch_model.bin",
    None,
    "CLIP DFN5B ViT-H-14 at 384 px (image and text)",
    shapes=lambda: module_shapes(CLIP()),
)
