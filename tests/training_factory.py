"""A tiny training world for tests: random feature caches with a test encoder set's dimensions, and
a train config that makes every path (checkpoints, validation, EMA) run in seconds."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from soundvcm.data.cache import CacheMeta, write_shard
from soundvcm.training.config import TRAIN_PRESETS

DIMS = dict(latent=(32, 4), clip=(8, 6), sync=(16, 5), text=(77, 3))  # 1 s, tiny feature sizes


def synthetic_cache(root: Path, rows: int, has_video: bool = True, seed: int = 0, per_shard: int = 4) -> Path:
    """A cache of random features with the lite encoder set's name and tiny dimensions."""
    g = torch.Generator().manual_seed(seed)
    meta = CacheMeta(
        encoder_set="test", sample_rate=16_000, clip_fps=8.0, sync_fps=25.0, duration=1.0,
        latent_shape=list(DIMS["latent"]), clip_shape=list(DIMS["clip"]), sync_shape=list(DIMS["sync"]),
        text_shape=list(DIMS["text"]), has_video=has_video, rows=rows, rows_per_shard=per_shard,
    )  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    meta.save(root)
    for shard in range(meta.num_shards):
        n = min(per_shard, rows - shard * per_shard)
        t = {
            "mean": torch.randn(n, *DIMS["latent"], generator=g) + 2.0,
            "std": torch.rand(n, *DIMS["latent"], generator=g) * 0.1,
            "text": torch.randn(n, *DIMS["text"], generator=g),
        }
        if has_video:
            t["clip"] = torch.randn(n, *DIMS["clip"], generator=g)
            t["sync"] = torch.randn(n, *DIMS["sync"], generator=g)
        ids = [f"r{shard * per_shard + i}" for i in range(n)]
        write_shard(root, shard, t, ids, ["caption"] * n, [True] * n)
    return root


def tiny_spec():
    from soundvcm.encoders.base import EncoderSetSpec
    from soundvcm.media.video import FrameSpec
    from soundvcm.sequence import SequenceConfig

    return EncoderSetSpec(
        "test", DIMS["clip"][1], DIMS["sync"][1], DIMS["text"][1], 77, DIMS["latent"][1],
        SequenceConfig(duration=1.0), FrameSpec(8, 8, 8), FrameSpec(25, 8, 8),
    )  # fmt: skip


def tiny_config(**kw):
    base = replace(
        TRAIN_PRESETS["tiny_cpu"], steps=6, batch_size=4, checkpoint_every=3, val_every=3, sample_every=0,
        log_every=2, ema_snapshot_every=2, warmup=2, milestones=(5,), latent_stats_rows=8, val_batch=4,
    )  # fmt: skip
    return replace(base, **kw)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on (for a process group's rendezvous)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
