"""Layers shared by the encoder and embedder modules."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PackedAttention(nn.Module):
    """``nn.MultiheadAttention``'s parameter layout (one packed in_proj, out_proj; optional learned
    bias_k/bias_v appended as one extra key/value token), batch-first, computed with SDPA.
    Used by CLIP, Synchformer's aggregation layers and ImageBind, whose checkpoints use that layout."""

    def __init__(self, dim: int, heads: int, bias_kv: bool = False):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        if bias_kv:
            self.bias_k = nn.Parameter(torch.zeros(1, 1, dim))
            self.bias_v = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x: Tensor, causal: bool = False) -> Tensor:
        b, n, d = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        if hasattr(self, "bias_k"):
            k = torch.cat([k, self.bias_k.expand(b, 1, d)], dim=1)
            v = torch.cat([v, self.bias_v.expand(b, 1, d)], dim=1)

        def split(t: Tensor) -> Tensor:
            return t.view(b, t.shape[1], self.heads, d // self.heads).transpose(1, 2)

        y = F.scaled_dot_product_attention(split(q), split(k), split(v), is_causal=causal)
        return self.out_proj(y.transpose(1, 2).reshape(b, n, d))
