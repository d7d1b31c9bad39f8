"""CLIP's byte-level BPE tokenizer (open_clip's ``SimpleTokenizer``), our own code.

Text is cleaned (HTML entities unescaped, whitespace collapsed) and lower-cased, split with
CLIP's pattern, mapped to printable byte symbols and merged by rank with the 48,894 merges of
``bpe_simple_vocab_16e6.txt.gz`` (weights registry name ``clip_bpe``). Sequences are
``<start_of_text> ... <end_of_text>``, truncated to 77 (the last token stays end-of-text) and
zero-padded. Differences from open_clip: no ``ftfy`` mojibake repair, and the letter/number
classes use Python's ``re`` (``[^\\W\\d_]`` and ``\\d``) instead of ``regex``'s ``\\p{L}``/``\\p{N}``,
which only differ on rare numeric symbols.
"""

from __future__ import annotations

import gzip
import html
import re
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

from soundvcm.weights import WeightFile

PATTERN = re.compile(
    r"<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|(?:[^\s\w]|_)+", re.IGNORECASE
)


@lru_cache
def bytes_to_unicode() -> dict[int, str]:
    """Every byte to a printable character (printable Latin-1 bytes map to themselves)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


class CLIPTokenizer:
    def __init__(self, bpe_path: str | Path, context_length: int = 77):
        with gzip.open(bpe_path) as f:
            lines = f.read().decode("utf-8").split("\n")
        merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1] if m.strip()]
        symbols = list(bytes_to_unicode().values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
        vocab += ["<start_of_text>", "<end_of_text>"]
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()
        self.sot, self.eot = self.encoder["<start_of_text>"], self.encoder["<end_of_text>"]
        self.context_length = context_length
        self.cache: dict[str, list[str]] = {}

    def bpe(self, token: str) -> list[str]:
        if token in self.cache:
            return self.cache[token]
        word = list(token[:-1]) + [token[-1] + "</w>"]
        while len(word) > 1:
            pairs = {(a, b) for a, b in zip(word, word[1:])}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        self.cache[token] = word
        return word

    def encode(self, text: str) -> list[int]:
        text = html.unescape(html.unescape(text)).strip()
        text = re.sub(r"\s+", " ", text).strip().lower()
        ids: list[int] = []
        for piece in PATTERN.findall(text):
            piece = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(piece))
        return ids

    def __call__(self, texts: list[str]) -> Tensor:
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for i, text in enumerate(texts):
            ids = [self.sot, *self.encode(text), self.eot][: self.context_length]
            ids[-1] = self.eot
            out[i, : len(ids)] = torch.tensor(ids)
        return out


CLIP_BPE = WeightFile(
    "clip_bpe",
    "bpe_simple_vocab_16e6.txt.gz",
    "https://github.com/mlfoundations/open_clip/raw/v3.3.0/src/open_clip/bpe_simple_vocab_16e6.txt.gz",
    "933b7abbbbde62c36f02f0e6ccde464f",
    "CLIP's BPE merges (text tokenizer)",
)
