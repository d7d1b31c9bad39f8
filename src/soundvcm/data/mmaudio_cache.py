"""Read MMAudio's extracted feature caches (TensorDict memory-mapped directories) as they are.

MMAudio's ``extract_*`` scripts save one TensorDict per split with ``memmap_``: a directory with
``meta.json`` (per key: shape and dtype) and one raw ``KEY.memmap`` file per key. Keys: ``mean``
and ``std`` (N, 250, 20) at 16 kHz or (N, 345, 40) at 44.1 kHz; ``clip_features`` (N, 64, 1024),
``sync_features`` (N, 192, 768) and ``text_features`` (N, 77, 1024); audio-text sets have no
clip/sync features. This reader needs neither tensordict nor a copy: rows are read from numpy
memmaps and present the same interface as :class:`soundvcm.data.cache.FeatureCache`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from soundvcm.data.cache import KEYS_AUDIO, KEYS_VIDEO, CacheError, CacheMeta, check_finite

KEY_MAP = {"mean": "mean", "std": "std", "clip": "clip_features", "sync": "sync_features", "text": "text_features"}
DTYPES = {"torch.float32": np.float32, "torch.float16": np.float16, "torch.bfloat16": np.int16}


def is_mmaudio_cache(root: Path) -> bool:
    path = Path(root) / "meta.json"
    if not path.is_file():
        return False
    try:
        meta = json.loads(path.read_text())
    except ValueError:
        return False
    return "_type" in meta or "_class" in meta


class MMAudioCache:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        try:
            doc = json.loads((self.root / "meta.json").read_text())
        except (OSError, ValueError) as exc:
            raise CacheError(f"{self.root}/meta.json: unreadable TensorDict metadata ({exc})") from exc
        self.arrays: dict[str, np.memmap] = {}
        self.bf16: set[str] = set()
        for ours, theirs in KEY_MAP.items():
            if theirs not in doc:
                continue
            entry = doc[theirs]
            dtype = DTYPES.get(entry.get("dtype"))
            if dtype is None:
                raise CacheError(f"{self.root}: unsupported dtype {entry.get('dtype')} for {theirs}")
            path = self.root / f"{theirs}.memmap"
            shape = tuple(entry["shape"])
            expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
            if not path.is_file() or path.stat().st_size != expected:
                raise CacheError(f"{path}: missing or truncated (expected {expected} bytes for shape {shape})")
            self.arrays[ours] = np.memmap(path, dtype=dtype, mode="r", shape=shape)
            if entry.get("dtype") == "torch.bfloat16":
                self.bf16.add(ours)
        for key in KEYS_AUDIO:
            if key not in self.arrays:
                raise CacheError(f"{self.root}: not an MMAudio feature cache (no {KEY_MAP[key]})")
        has_video = "clip" in self.arrays and "sync" in self.arrays
        self.keys = KEYS_VIDEO if has_video else KEYS_AUDIO
        latent = list(self.arrays["mean"].shape[1:])
        sixteen = latent[1] == 20
        self.meta = CacheMeta(
            encoder_set="mmaudio_16k" if sixteen else "mmaudio_44k",
            sample_rate=16_000 if sixteen else 44_100,
            clip_fps=8.0,
            sync_fps=25.0,
            duration=8.0,
            latent_shape=latent,
            clip_shape=list(self.arrays["clip"].shape[1:]) if has_video else [64, 1024],
            sync_shape=list(self.arrays["sync"].shape[1:]) if has_video else [192, 768],
            text_shape=list(self.arrays["text"].shape[1:]),
            has_video=has_video,
            rows=int(self.arrays["mean"].shape[0]),
            rows_per_shard=int(self.arrays["mean"].shape[0]),
            source="mmaudio-tensordict",
        )

    def __len__(self) -> int:
        return self.meta.rows

    def row(self, index: int) -> dict[str, Tensor]:
        out = {}
        for key in self.keys:
            t = torch.from_numpy(np.array(self.arrays[key][index]))
            out[key] = t.view(torch.bfloat16).float() if key in self.bf16 else t.float()
        check_finite(out, lambda: f"{self.root}: row {index}")
        return out
