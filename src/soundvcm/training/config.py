"""Training configuration: one typed dataclass, named presets, and ``key=value`` overrides.

Presets (``soundvcm train --preset NAME``):

* ``paper``: §4.3 -- ``small_16k``, VCM, global batch 512, 300k steps, AdamW lr 1e-4, betas
  (0.9, 0.95), weight decay 1e-6, warm-up 1k steps, x0.1 at 240k and 270k, clip 1.0, bf16 on GPU,
  post-hoc EMA sigma_rel 0.05 (tracked: 0.05, 0.1).
* ``fm_baseline``: the same network and data with flow matching (MMAudio's recipe).
* ``meanflow_baseline``: the same with MeanFlow.
* ``lite_cpu``: the 27.9M ``lite`` network on the lite encoders, batch 16, for a few CPU cores.
* ``tiny_cpu``: the ``debug`` network (feature sizes from the cache), batch 8, for tests/smoke runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields, replace
from typing import Any


@dataclass(frozen=True)
class TrainConfig:
    network: str = "small_16k"
    objective: str = "vcm"
    steps: int = 300_000
    batch_size: int = 512  # global: ranks x accumulation x per-rank micro-batch
    accumulation: int = 1
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 1e-6
    eps: float = 1e-6
    warmup: int = 1_000
    milestones: tuple[int, ...] = (240_000, 270_000)
    lr_decay: float = 0.1
    grad_clip: float = 1.0
    precision: str = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU; or "fp32" / "bf16"
    compile: bool = False
    ema_sigma_rels: tuple[float, ...] = (0.05, 0.1)
    ema_export_sigma_rel: float = 0.05
    ema_snapshot_every: int = 5_000
    checkpoint_every: int = 10_000
    keep_checkpoints: int = 2
    log_every: int = 200
    val_every: int = 5_000
    val_batch: int = 32
    sample_every: int = 20_000
    sample_steps: int = 1
    seed: int = 14159265
    max_nonfinite: int = 10  # consecutive skipped (NaN/inf) steps before aborting
    latent_stats_rows: int = 1_000  # rows used for the latent mean/std of a fresh run

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.accumulation < 1:
            raise ValueError("steps, batch_size and accumulation must be >= 1")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be auto, fp32 or bf16, got {self.precision!r}")

    def schedule(self, step: int) -> float:
        """LR multiplier at ``step``: linear warm-up (step + 1) / (warmup + 1), then steps at milestones."""
        warm = min(1.0, (step + 1) / (self.warmup + 1)) if self.warmup > 0 else 1.0
        return warm * self.lr_decay ** sum(step >= m for m in self.milestones)


PAPER = TrainConfig()
TRAIN_PRESETS: dict[str, TrainConfig] = {
    "paper": PAPER,
    "fm_baseline": replace(PAPER, objective="fm"),
    "meanflow_baseline": replace(PAPER, objective="meanflow"),
    "lite_cpu": replace(
        PAPER, network="lite", batch_size=16, steps=20_000, warmup=200, milestones=(16_000, 18_000),
        ema_snapshot_every=1_000, checkpoint_every=500, log_every=20, val_every=500, val_batch=16,
        sample_every=2_000, latent_stats_rows=200,
    ),
    "tiny_cpu": replace(
        PAPER, network="debug", batch_size=8, steps=200, warmup=10, milestones=(150,), ema_snapshot_every=50,
        checkpoint_every=50, log_every=10, val_every=50, val_batch=8, sample_every=100, latent_stats_rows=64,
    ),
}  # fmt: skip


def _parse(value: str, current: Any) -> Any:
    if isinstance(current, bool):
        if value.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"expected true/false, got {value!r}")
        return value.lower() in ("true", "1")
    if isinstance(current, int):
        return int(float(value)) if "e" in value.lower() else int(value)
    if isinstance(current, float):
        return float(value)
    if isinstance(current, tuple):
        items = [v for v in value.strip("()[]").split(",") if v.strip()]
        kind = type(current[0]) if current else float
        return tuple(kind(float(v)) if kind is int else kind(v) for v in items)
    return value


def train_config(preset: str, overrides: list[str] | None = None, **kwargs: Any) -> TrainConfig:
    """A preset with ``key=value`` overrides applied (types follow the field's default)."""
    if preset not in TRAIN_PRESETS:
        raise ValueError(f"unknown training preset '{preset}'; choose one of {sorted(TRAIN_PRESETS)}")
    config = TRAIN_PRESETS[preset]
    names = {f.name for f in fields(TrainConfig)}
    changes = dict(kwargs)
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or key not in names:
            raise ValueError(f"bad override {item!r}: use key=value with key one of {sorted(names)}")
        changes[key] = _parse(value, getattr(config, key))
    return replace(config, **changes)


def config_dict(config: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return TrainConfig(**data)


__all__ = ["TRAIN_PRESETS", "TrainConfig", "config_dict", "config_from_dict", "field", "train_config"]
