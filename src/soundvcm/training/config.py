"""Training configuration: one typed dataclass, named presets, and ``key=value`` overrides.

Presets (``soundvcm train --preset NAME``):

* ``paper``: §4.3 -- ``small_16k``, VCM, global batch 512, 300k steps, AdamW lr 1e-4, betas
  (0.9, 0.95), weight decay 1e-6, warm-up 1k steps, x0.1 at 240k and 270k, clip 1.0, bf16 on GPU,
  post-hoc EMA sigma_rel 0.05 (tracked: 0.05, 0.1).
* ``fm_baseline``: the same network and data with flow matching (MMAudio's recipe).
* ``meanflow_baseline``: the same with MeanFlow.
* ``lite_cpu``: the 27.9M ``lite`` network on the lite encoders, batch 16, for a few CPU cores.
* ``lite_small`` / ``lite_small_fm`` / ``lite_small_split_p`` / ``lite_small_meanflow``: the shipped default (8.2M
  ``lite_small`` network, 4 s clips) with VCM (Alg. 1), its flow-matching twin, and the t = s
  weighting ablation (split adaptive p), and MeanFlow; batch 16, lr 3e-4, precision auto (bf16 autocast only on
  a GPU or a CPU with native bf16, where it is 1.5x faster than fp32; on an AVX2-only CPU bf16 is 40x slower),
  checkpoints every 250 steps so a stopped session loses little.
* ``lite2_small`` / ``lite2_small_fm`` / ``lite2_small_meanflow``: the same on the lite2 encoder set (time-ordered
  signed-motion sync, 160 px frames), 20k steps with the LR steps at 16k and 18k: the shipped models (issue 23).
* ``tiny_cpu``: the ``debug`` network (feature sizes from the cache), batch 8, for tests/smoke runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from typing import Any

from soundvcm.configs import apply_overrides, from_dict, leaf_keys, parse_value, to_dict
from soundvcm.objectives import OBJECTIVE_PRESETS, ObjectiveConfig


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
    precision: str = "auto"  # auto (soundvcm.precision: bf16 on GPU and on a native-bf16 CPU where faster), fp32, bf16
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
    # dotted overrides of the objective's config, e.g. (("guidance.scale", "3"), ("lambda_end", "0.001")): kept
    # as given (the run's identity, config.json), parsed once into objective_config
    objective_overrides: tuple[tuple[str, str], ...] = ()
    # the objective's config with the overrides applied (None: resolved from the preset on construction)
    objective_config: ObjectiveConfig | None = None
    # fine-tuning (training/finetune.py): only parameters matching these regular expressions train
    # (empty: all), e.g. trainable=offset_embed,adaLN_modulation
    trainable: tuple[str, ...] = ()
    lora_rank: int = 0  # > 0: low-rank adapters on lora_targets, base weights frozen, merged on export
    lora_alpha: float = 0.0  # 0: alpha = rank (scale 1)
    lora_targets: tuple[str, ...] = (r"attn\.qkv$", r"linear1$", r"ffn\.w[123]$")

    def __post_init__(self) -> None:
        from soundvcm.network.mmdit import NETWORK_PRESETS
        from soundvcm.precision import PRECISIONS

        choices: dict[str, Any] = {
            "network": NETWORK_PRESETS,
            "objective": OBJECTIVE_PRESETS,
            "precision": PRECISIONS,
        }
        for key, valid in choices.items():
            if getattr(self, key) not in valid:
                raise ValueError(f"{key}={getattr(self, key)!r} is not one of {', '.join(sorted(valid))}")
        for key in ("steps", "batch_size", "accumulation"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("lr", "eps", "lr_decay", "grad_clip", "ema_export_sigma_rel"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key} must be > 0, got {getattr(self, key)}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas needs two values in [0, 1), e.g. betas=0.9,0.95; got {self.betas}")
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank must be >= 0 (0: no adapters), got {self.lora_rank}")
        for pattern in (*self.trainable, *self.lora_targets):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression ({exc})") from None
        if not self.ema_sigma_rels or not all(0 < s < 0.28 for s in self.ema_sigma_rels):
            raise ValueError(f"ema_sigma_rels needs values in (0, 0.28), e.g. 0.05,0.1; got {self.ema_sigma_rels}")
        preset = OBJECTIVE_PRESETS[self.objective].config
        if not isinstance(self.objective_config, type(preset)):  # a preset, or the objective was replaced
            resolved = apply_overrides(preset, self.objective_overrides, f"objective {self.objective!r}")
            object.__setattr__(self, "objective_config", resolved)

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
        PAPER,
        network="lite",
        batch_size=16,
        steps=20_000,
        warmup=200,
        milestones=(16_000, 18_000),
        ema_snapshot_every=1_000,
        checkpoint_every=500,
        log_every=20,
        val_every=500,
        val_batch=16,
        sample_every=2_000,
        latent_stats_rows=200,
    ),
    "lite_small": (
        LITE_SMALL := replace(
            PAPER,
            network="lite_small",
            batch_size=16,
            steps=8_000,
            lr=3e-4,
            warmup=200,
            milestones=(6_400, 7_200),
            ema_sigma_rels=(0.05, 0.1),
            ema_snapshot_every=250,
            checkpoint_every=250,
            log_every=20,
            val_every=250,
            val_batch=32,
            sample_every=0,
            latent_stats_rows=500,
        )
    ),
    "lite_small_fm": replace(LITE_SMALL, objective="fm"),
    "lite_small_split_p": replace(LITE_SMALL, objective="vcm_split_p"),
    "lite_small_meanflow": replace(LITE_SMALL, objective="meanflow"),
    # the shipped models since issue 23: the same network and recipe on the lite2 encoder set, trained
    # longer (flow matching first, then VCM from it with --init; MeanFlow at equal compute)
    "lite2_small": (
        LITE2_SMALL := replace(
            LITE_SMALL,
            network="lite2_small",
            steps=20_000,
            milestones=(16_000, 18_000),
            ema_snapshot_every=500,
            checkpoint_every=500,
            val_every=500,
        )
    ),
    "lite2_small_fm": replace(LITE2_SMALL, objective="fm"),
    "lite2_small_meanflow": replace(LITE2_SMALL, objective="meanflow"),
    # issue 33: the same recipe on the lite3 set's learned 20-channel mel latent
    "lite3_small": (LITE3_SMALL := replace(LITE2_SMALL, network="lite3_small")),
    "lite3_small_fm": replace(LITE3_SMALL, objective="fm"),
    "lite3_small_meanflow": replace(LITE3_SMALL, objective="meanflow"),
    # issue 33, step 3: 192 wide over half as many audio tokens, against lite3_small_fm at equal compute
    "lite3_wide_patch2": (LITE3_WIDE := replace(LITE3_SMALL, network="lite3_wide_patch2")),
    "lite3_wide_patch2_fm": replace(LITE3_WIDE, objective="fm"),
    "tiny_cpu": replace(
        PAPER,
        network="debug",
        batch_size=8,
        steps=200,
        warmup=10,
        milestones=(150,),
        ema_snapshot_every=50,
        checkpoint_every=50,
        log_every=10,
        val_every=50,
        val_batch=8,
        sample_every=100,
        latent_stats_rows=64,
    ),
}


STRING_LISTS = ("trainable", "lora_targets")  # comma-separated strings (regular expressions)


def _parse(key: str, value: str, current: Any) -> Any:
    """``value`` as the type of the field's current value (:func:`soundvcm.configs.parse_value`)."""
    if key in STRING_LISTS:
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return parse_value(key, value, current)


# The run's identity: a resumed run can never change these.
FIXED_ON_RESUME = (
    "network",
    "objective",
    "objective_overrides",
    "objective_config",
    "batch_size",
    "accumulation",
    "seed",
    "ema_sigma_rels",
    "trainable",
    "lora_rank",
    "lora_alpha",
    "lora_targets",
)


def train_config(preset: str, overrides: list[str] | None = None, base: TrainConfig | None = None, **kwargs: Any):
    """A preset (or ``base``) with ``key=value`` overrides applied (types follow the field's value)."""
    if base is None:
        if preset not in TRAIN_PRESETS:
            raise ValueError(f"unknown training preset '{preset}'; choose one of {', '.join(sorted(TRAIN_PRESETS))}")
        base = TRAIN_PRESETS[preset]
    names = {f.name for f in fields(TrainConfig)} - {"objective_overrides", "objective_config"}
    changes = dict(kwargs)
    dotted: list[tuple[str, str]] = []
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"bad override {item!r}: use key=value")
        if key in names:
            changes[key] = _parse(key, value, getattr(base, key))
        else:
            dotted.append((key, value))
    objective = changes.get("objective", base.objective)
    if dotted:
        valid = leaf_keys(OBJECTIVE_PRESETS[objective].config) if objective in OBJECTIVE_PRESETS else {}
        unknown = [k for k, _ in dotted if k not in valid]
        if unknown:
            raise ValueError(
                f"bad override {unknown[0]!r}: not a training key ({', '.join(sorted(names))}) nor a key of "
                f"objective {objective!r} ({', '.join(sorted(valid))})"
            )
        merged = dict(base.objective_overrides)
        merged.update(dotted)
        changes["objective_overrides"] = tuple(merged.items())
    if (dotted or objective != base.objective) and objective in OBJECTIVE_PRESETS:  # parsed here, once
        changes["objective_config"] = apply_overrides(
            OBJECTIVE_PRESETS[objective].config,
            changes.get("objective_overrides", base.objective_overrides),
            f"objective {objective!r}",
        )
    return replace(base, **changes)


# How a step is computed, not what it computes: a resume may change these without --allow-changes.
RUNTIME_FIELDS = ("precision", "compile")


def config_changes(saved: TrainConfig, new: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """Fields where ``new`` differs from ``saved``: key -> (saved, new)."""
    return {
        f.name: (getattr(saved, f.name), getattr(new, f.name))
        for f in fields(TrainConfig)
        if getattr(saved, f.name) != getattr(new, f.name)
    }


def resume_config(
    saved: TrainConfig, preset: str | None, overrides: list[str], allow_changes: bool, **kwargs: Any
) -> TrainConfig:
    """The config a resumed run continues with: the saved one, unless changes are asked for.

    Changes (a preset, ``--steps`` or ``key=value`` given with ``--resume``) are listed, and
    refused unless ``allow_changes``; the run's identity (:data:`FIXED_ON_RESUME`) never changes.
    How the machine computes (:data:`RUNTIME_FIELDS`) may change freely: a run continued on another
    kind of CPU picks its own precision.
    """
    new = train_config(preset or "", overrides, base=None if preset else saved, **kwargs)
    changes = config_changes(saved, new)
    if all(k in RUNTIME_FIELDS for k in changes):
        return new
    listed = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changes.items())
    fixed = [k for k in changes if k in FIXED_ON_RESUME]
    if fixed:
        raise ValueError(f"a resumed run keeps its {', '.join(fixed)} ({listed}); start a new run in another --out")
    if not allow_changes:
        raise ValueError(f"--resume with changes to the saved run: {listed}; pass --allow-changes to apply them")
    return new


def config_dict(config: TrainConfig) -> dict[str, Any]:
    return to_dict(config)


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """A saved TrainConfig (checkpoint, config.json); the objective's config rebuilt as its dataclass
    (runs saved before it was stored are resolved from their overrides)."""
    data = dict(data)
    saved = data.pop("objective_config", None)
    if isinstance(saved, dict):
        data["objective_config"] = from_dict(type(OBJECTIVE_PRESETS[data.get("objective", "vcm")].config), saved)
    return from_dict(TrainConfig, data)


__all__ = [
    "FIXED_ON_RESUME",
    "TRAIN_PRESETS",
    "TrainConfig",
    "config_changes",
    "config_dict",
    "config_from_dict",
    "resume_config",
    "train_config",
]
