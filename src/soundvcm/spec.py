"""The run specification saved in every checkpoint: what the weights are and how to sample them.

A :class:`ModelSpec` (flux-style) names the network preset, the encoder set whose features the
network takes, the objective with its full resolved config, and the default sampler. The
trainer, ``soundvcm model init`` and ``convert mmaudio`` write it into the checkpoint's JSON
(``"spec"``); :class:`soundvcm.pipeline.Pipeline`, the trainer's samples, the benches and
``evaluate`` read it, so nothing guesses the encoder set or the sampler from tensor shapes.
Checkpoints written before the spec existed are read through :func:`legacy_spec`, the one place
that infers it (from the fields those checkpoints hold).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from soundvcm.configs import from_dict, to_dict
from soundvcm.encoders import ENCODER_SPECS, encoder_spec
from soundvcm.network.checkpoint import config_from_dict, config_to_dict, read_checkpoint_config
from soundvcm.network.config import PRESET_ENCODERS, PRESETS, MMDiTConfig, network_config, network_preset
from soundvcm.objectives import OBJECTIVE_PRESETS, FlowMatching, ObjectiveConfig
from soundvcm.sampling import (
    ConsistencyOptions,
    EulerOptions,
    SamplerOptions,
    options_for,
    options_from_dict,
    options_to_dict,
    with_settings,
)


def is_consistency(objective: str | None) -> bool:
    """Does the objective train a few-step (average-velocity) model? (Alg. 2 samples it.)"""
    return objective in OBJECTIVE_PRESETS and OBJECTIVE_PRESETS[objective].build is not FlowMatching


def default_sampler(objective: str | None) -> SamplerOptions:
    """Alg. 2 in 1 step for consistency objectives; MMAudio's Euler 25 x CFG 4.5 otherwise."""
    if is_consistency(objective):
        return ConsistencyOptions(steps=1)
    return EulerOptions(steps=25, cfg_scale=4.5)


@dataclass(frozen=True)
class ModelSpec:
    network: str | None  # the preset the network was built from (None: not a preset)
    encoder_set: str
    objective: str | None  # None: never trained (model init) and no objective named
    objective_config: ObjectiveConfig | None = None  # the objective's config (None: no objective)
    sampler: SamplerOptions = field(default_factory=ConsistencyOptions)
    network_config: MMDiTConfig | None = None  # the network's sizes and sequence (clip length included)
    vocoder: str | None = None  # the vocoder it was measured with (None: its encoder set's auto choice)

    @classmethod
    def create(
        cls,
        network: str | None,
        encoder_set: str,
        objective: str | None,
        objective_config: ObjectiveConfig | None = None,
        network_config: MMDiTConfig | None = None,
    ) -> ModelSpec:
        if objective_config is None and objective in OBJECTIVE_PRESETS:
            objective_config = OBJECTIVE_PRESETS[objective].config
        if network_config is None and network in PRESET_ENCODERS:
            network_config = preset_for_encoders(network, encoder_set if encoder_set in ENCODER_SPECS else None)[0]
        return cls(network, encoder_set, objective, objective_config, default_sampler(objective), network_config)

    @property
    def duration(self) -> float | None:
        """The clip length the network was trained on (None when the spec does not know its network)."""
        return None if self.network_config is None else float(self.network_config.sequence.duration)

    def to_dict(self) -> dict[str, Any]:
        return {
            "network": self.network,
            "encoder_set": self.encoder_set,
            "objective": self.objective,
            "objective_config": to_dict(self.objective_config) if self.objective_config is not None else {},
            "sampler": options_to_dict(self.sampler),
            "network_config": config_to_dict(self.network_config) if self.network_config is not None else None,
            "vocoder": self.vocoder,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], network: dict[str, Any] | None = None) -> ModelSpec:
        """The spec of :meth:`to_dict`; ``network``: the checkpoint's own network config, for specs
        saved before they carried it."""
        data = dict(data)
        data["sampler"] = options_from_dict(data.get("sampler", {}))
        objective, saved = data.get("objective"), data.get("objective_config")
        if objective in OBJECTIVE_PRESETS and isinstance(saved, dict):
            data["objective_config"] = from_dict(type(OBJECTIVE_PRESETS[objective].config), saved) if saved else None
        elif not saved:
            data["objective_config"] = None
        net = data.get("network_config") or network
        data["network_config"] = config_from_dict(net) if isinstance(net, dict) else None
        return cls(**data)

    def sampler_for(self, kind: str | None = None, **settings: float | None) -> SamplerOptions:
        """This model's sampler options with ``settings`` replaced (None: kept); another ``kind`` starts
        from that sampler's defaults. A setting the sampler does not have is a ValueError naming it."""
        if kind is not None and kind != self.sampler.kind:
            return options_for(kind, **settings)
        return with_settings(self.sampler, **settings)


def preset_for_encoders(name: str, encoder_set: str | None = None) -> tuple[MMDiTConfig, str]:
    """A network preset sized for an encoder set's features (None: the preset's own set).

    Asking e.g. for ``small_16k`` with ``lite`` swaps in the lite feature sizes and timeline.
    Debug presets keep their tiny sizes unless an encoder set is named.
    """
    config = network_preset(name)
    if encoder_set is None:
        return config, PRESET_ENCODERS.get(name, "debug")
    size = replace(PRESETS[name].size, duration=config.sequence.duration)  # the preset's clip length, kept
    return network_config(size, encoder_spec(encoder_set).features), encoder_set


def network_for_cache(name: str, meta) -> tuple[MMDiTConfig, str]:
    """Preset ``name`` sized for a feature cache (its encoder set and clip length), checked against
    the cache's sequence lengths; and the encoder set's name."""
    net_config, encoder_set = preset_for_encoders(name, meta.encoder_set)
    net_config = replace(net_config, sequence=replace(net_config.sequence, duration=meta.duration))
    seq = net_config.sequence
    lengths = {
        "latent": (seq.latent_seq_len, meta.latent_shape[0]),
        "clip": (seq.clip_seq_len, meta.clip_shape[0]),
        "sync": (seq.sync_seq_len, meta.sync_shape[0]),
    }
    bad = {k: v for k, v in lengths.items() if v[0] != v[1]}
    if bad:
        raise ValueError(f"the caches' sequence lengths do not fit a {meta.duration} s network: {bad} (network, cache)")
    return net_config, encoder_set


def legacy_spec(doc: dict[str, Any]) -> ModelSpec:
    """The spec of a checkpoint written before specs were saved (inferred once, here)."""
    encoder_set = doc.get("encoder_set") or "lite"
    if encoder_set == "mmaudio":  # converted MMAudio networks named the family only
        preset = doc.get("preset") or (doc.get("provenance") or {}).get("variant")
        if preset in PRESET_ENCODERS:
            encoder_set = PRESET_ENCODERS[preset]
        else:  # the two families differ in their latent width: 20 (16 kHz) or 40 (44.1 kHz)
            encoder_set = "mmaudio_16k" if doc["network"]["latent_dim"] == 20 else "mmaudio_44k"
    objective = doc.get("objective")
    if objective is None and (doc.get("provenance") or {}).get("kind") == "converted":
        objective = "fm"
    network = config_from_dict(doc["network"]) if isinstance(doc.get("network"), dict) else None
    return ModelSpec.create(doc.get("preset"), encoder_set, objective, network_config=network)


def read_spec(source: str | Path | dict[str, Any]) -> ModelSpec:
    """The spec of a checkpoint (path or its parsed JSON)."""
    doc = source if isinstance(source, dict) else read_checkpoint_config(source)
    if "spec" in doc:
        return ModelSpec.from_dict(doc["spec"], doc.get("network"))
    return legacy_spec(doc)
