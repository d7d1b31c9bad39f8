"""The toy bench's settings: the variants compared (FM, VCM, MeanFlow, Table 2's ablation rows)
and the typed config of a run (mixture, network, optimiser, evaluation sizes)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from soundvcm.exact_flow import Guidance, MixtureSpec
from soundvcm.network.toy import ToyNetConfig
from soundvcm.objectives import OBJECTIVE_PRESETS, ObjectiveConfig

CONSISTENCY_STEPS = (1, 2, 4)
FM_STEPS = (2, 4, 25)  # Euler steps; x2 network evaluations with CFG: 4, 8 and 50 NFE


@dataclass(frozen=True)
class Variant:
    """An objective preset with changes to its config: ``time.*``, ``guidance.*`` or top-level keys."""

    label: str
    objective: str
    changes: tuple[tuple[str, float], ...] = ()

    @property
    def consistency(self) -> bool:
        return self.objective != "fm"

    def settings(self) -> dict[str, int]:
        """Sampler setting name -> sampler steps (fm@N counts N network evaluations)."""
        if self.consistency:
            return {f"{self.label}@{n}": n for n in CONSISTENCY_STEPS}
        return {f"{self.label}@{2 * n}": n for n in FM_STEPS}


MAIN_VARIANTS = (
    Variant("fm", "fm"),
    Variant("vcm", "vcm"),
    Variant("vcm_split_p", "vcm_split_p"),
    Variant("meanflow", "meanflow"),
    Variant("meanflow_split_p", "meanflow_split_p"),
)
ABLATION_VARIANTS = (  # Table 2's rows, one change at a time from the paper's base, plus p on t = s rows
    Variant("base (r=0.75, p=1, m=0.25, w=4)", "vcm"),
    Variant("r=0", "vcm", (("time.equal_ratio", 0.0),)),
    Variant("r=0.25", "vcm", (("time.equal_ratio", 0.25),)),
    Variant("p=0", "vcm", (("adaptive_p", 0.0),)),
    Variant("p=1, p(t=s)=0", "vcm", (("adaptive_p_equal", 0.0),)),
    Variant("m=0.75", "vcm", (("guidance.mix", 0.75),)),
    Variant("w=2", "vcm", (("guidance.scale", 2.0),)),
)


@dataclass(frozen=True)
class ToyBenchConfig:
    """Everything the toy benchmark depends on; seeds make it reproducible."""

    dim: int = 2
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    vcm_steps: int = 4000
    batch_size: int = 256
    lr: float = 3e-3
    lr_final: float = 1e-4
    warmup_frac: float = 0.02
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    width: int = 64
    depth: int = 4
    num_classes: int = 4
    components_per_class: int = 2
    std: float = 0.15
    guidance_scale: float = 4.0
    guidance_t_max: float = 0.8
    mix: float = 0.25
    eval_per_class: int = 1000
    mse_points: int = 2000
    ode_steps: int = 256
    calibration_steps: int = 30
    workers: int = 2
    # Fixed step counts per variant label, e.g. (("fm", 6000), ...): set by --replay; empty means
    # calibrate (equal CPU cost to vcm_steps of the reference variant).
    steps: tuple[tuple[str, int], ...] = ()

    def mixture(self, seed: int) -> MixtureSpec:
        return MixtureSpec(self.dim, self.num_classes, self.components_per_class, self.std, seed=seed)

    @property
    def guidance(self) -> Guidance:
        return Guidance(self.guidance_scale, self.guidance_t_max)

    @property
    def net(self) -> ToyNetConfig:
        return ToyNetConfig(dim=self.dim, num_classes=self.num_classes, width=self.width, depth=self.depth)

    def objective_config(self, variant: Variant) -> ObjectiveConfig:
        """The preset's config with this bench's guidance (w, window, m) and the variant's changes."""
        config: Any = OBJECTIVE_PRESETS[variant.objective].config  # edited field by field below
        if hasattr(config, "guidance"):
            g = replace(config.guidance, scale=self.guidance_scale, t_max=self.guidance_t_max, mix=self.mix)
            config = replace(config, guidance=g)
        for key, value in variant.changes:
            head, _, tail = key.partition(".")
            if tail:
                config = replace(config, **{head: replace(getattr(config, head), **{tail: value})})
            else:
                config = replace(config, **{key: value})
        return config


QUICK: dict[str, Any] = dict(
    seeds=(0,), vcm_steps=300, eval_per_class=250, mse_points=400, ode_steps=96, calibration_steps=8
)
