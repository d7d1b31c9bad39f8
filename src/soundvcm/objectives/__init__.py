"""Training objectives: flow matching, velocity consistency (the paper's) and MeanFlow.

Each is one object with ``loss(net, batch, step, generator=None) -> LossOutput``; build them by
name from :data:`OBJECTIVE_PRESETS` with :func:`build_objective`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from soundvcm.objectives.base import (
    Batch,
    LossOutput,
    Objective,
    adaptive_weight,
    per_row_mse,
    row_adaptive_weight,
)
from soundvcm.objectives.flow_matching import FlowMatching, FlowMatchingConfig
from soundvcm.objectives.guidance import TrainingGuidance
from soundvcm.objectives.mean_flow import MeanFlow, MeanFlowConfig
from soundvcm.objectives.time_sampling import TimeSampling
from soundvcm.objectives.velocity_consistency import (
    VelocityConsistency,
    VelocityConsistencyConfig,
    intermediate_time,
    lambda_schedule,
)

ObjectiveConfig = FlowMatchingConfig | VelocityConsistencyConfig | MeanFlowConfig
"""Every objective's frozen config; the objective is chosen by the config's type (:func:`objective_for`),
as :func:`soundvcm.sampling.sample` picks its sampler by the type of its options."""

OBJECTIVE_CLASSES: dict[type, Callable[..., Objective]] = {
    FlowMatchingConfig: FlowMatching,
    VelocityConsistencyConfig: VelocityConsistency,
    MeanFlowConfig: MeanFlow,
}


def objective_for(config: ObjectiveConfig, total_steps: int) -> Objective:
    """The objective a config belongs to, built from it."""
    return OBJECTIVE_CLASSES[type(config)](config, total_steps=total_steps)


def config_of(objective: Objective) -> ObjectiveConfig:
    """An objective's config, as the typed union (the protocol cannot name the union: the configs'
    modules import it)."""
    config = objective.config
    if not isinstance(config, ObjectiveConfig):
        raise TypeError(f"{type(objective).__name__}'s config is a {type(config).__name__}, not an ObjectiveConfig")
    return config


@dataclass(frozen=True)
class ObjectivePreset:
    """A named objective: its class and its frozen config."""

    build: Callable[..., Objective]
    config: ObjectiveConfig
    description: str


OBJECTIVE_PRESETS: dict[str, ObjectivePreset] = {
    "fm": ObjectivePreset(FlowMatching, FlowMatchingConfig(), "flow matching (Eq. 4), MMAudio's recipe"),
    # Default m = 0.25: Table 2's best row, and the row whose numbers Table 1 reports for the
    # 1-step SoundVCM (FD_VGG 0.88, FD_PANNs 5.95, FD_PaSST 78.90). §4.3's text says m = 0.75.
    "vcm": ObjectivePreset(
        VelocityConsistency, VelocityConsistencyConfig(), "velocity consistency, m = 0.25 (Table 1/2 best)"
    ),
    "vcm_sec43": ObjectivePreset(
        VelocityConsistency,
        VelocityConsistencyConfig(guidance=TrainingGuidance(mix=0.75)),
        "velocity consistency, m = 0.75 as written in §4.3",
    ),
    "meanflow": ObjectivePreset(MeanFlow, MeanFlowConfig(), "MeanFlow (JVP target), same guidance and weighting"),
    # Deviation (issue 11): plain MSE (p = 0) on the t = s rows, the paper's p = 1 on s < t rows.
    "vcm_split_p": ObjectivePreset(
        VelocityConsistency,
        VelocityConsistencyConfig(adaptive_p_equal=0.0),
        "velocity consistency with p = 0 on the t = s rows (unbiased velocity rows; not the paper's)",
    ),
    "meanflow_split_p": ObjectivePreset(
        MeanFlow, MeanFlowConfig(adaptive_p_equal=0.0), "MeanFlow with p = 0 on the t = s rows, like vcm_split_p"
    ),
}


def build_objective(name: str, total_steps: int, config: ObjectiveConfig | None = None) -> Objective:
    """Build a preset objective; ``config`` replaces the preset's config when given."""
    if name not in OBJECTIVE_PRESETS:
        raise ValueError(f"unknown objective {name!r}; choose one of {', '.join(OBJECTIVE_PRESETS)}")
    return objective_for(config if config is not None else OBJECTIVE_PRESETS[name].config, total_steps)


__all__ = [
    "config_of",
    "Batch",
    "LossOutput",
    "Objective",
    "ObjectiveConfig",
    "ObjectivePreset",
    "objective_for",
    "OBJECTIVE_PRESETS",
    "build_objective",
    "FlowMatching",
    "FlowMatchingConfig",
    "VelocityConsistency",
    "VelocityConsistencyConfig",
    "MeanFlow",
    "MeanFlowConfig",
    "TimeSampling",
    "TrainingGuidance",
    "adaptive_weight",
    "row_adaptive_weight",
    "per_row_mse",
    "lambda_schedule",
    "intermediate_time",
]
