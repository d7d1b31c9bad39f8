"""What a resumed run may and may not change: its identity, and the number of ranks.

A run's identity (:data:`~soundvcm.training.config.FIXED_ON_RESUME`) never changes on resume. The
number of ranks may: checkpoints hold whole tensors and the world size they were saved on, and
the number of micro-batches per step (ranks x accumulation) is what stays fixed, so a run saved
on 2 ranks resumes on 1 with accumulation doubled, and sees the same rows and noise every step.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from soundvcm.training.config import FIXED_ON_RESUME, TrainConfig, config_dict, config_from_dict


def fit_world(config: TrainConfig, saved_world: int, world: int) -> tuple[TrainConfig, str | None]:
    """The config for ``world`` ranks of a run saved on ``saved_world``, and a note when it changed."""
    if saved_world == world:
        return config, None
    micro_batches = saved_world * config.accumulation
    if micro_batches % world == 0:
        config = replace(config, accumulation=micro_batches // world)
        note = f"accumulation {config.accumulation} keeps its {micro_batches} micro-batches per step"
    else:
        config = replace(config, accumulation=1)
        note = (
            f"{micro_batches} micro-batches per step cannot be split over {world} ranks; "
            "accumulation 1: the same global batch, but other rows and noise per step"
        )
    return config, f"the run was saved on {saved_world} rank(s), resuming on {world}: {note}"


def check_identity(path: Path, doc: dict, config: TrainConfig, world: int) -> None:
    """Refuse to resume the checkpoint at ``path`` (its document ``doc``) with another identity."""
    saved, ours = config_dict(config_from_dict(doc["config"])), config_dict(config)  # older runs: defaults
    saved_world = doc.get("world", 1)
    for key in FIXED_ON_RESUME:
        mine, theirs = _plain(ours[key]), _plain(saved[key])
        if key == "accumulation":  # what is fixed is the number of micro-batches per step
            mine, theirs = mine * world, theirs * saved_world
        if mine != theirs:
            raise ValueError(f"{path}: the run used {key}={saved[key]}, not {ours[key]}; it cannot change on resume")


def _plain(value):
    """Lists (JSON) and tuples (configs) compare equal."""
    return list(value) if isinstance(value, (list, tuple)) else value
