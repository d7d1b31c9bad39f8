"""Our checkpoint format and MMAudio conversion.

A soundvcm checkpoint is two files side by side: ``NAME.safetensors`` (weights) and
``NAME.json`` (the resolved network config, sequence config, encoder set, objective, EMA
sigma_rel and provenance). Nothing is pickled. MMAudio ``.pth`` files are read with
``torch.load(weights_only=True)`` and loaded strictly; a file whose keys or shapes don't match
is refused with a message that names the first mismatches.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any, cast

import torch
from safetensors.torch import load_file
from torch import Tensor

from soundvcm.atomic import atomic_write, save_tensors, unreadable
from soundvcm.network.mmdit import NETWORK_PRESETS, MMDiT, MMDiTConfig
from soundvcm.sequence import SequenceConfig
from soundvcm.weights import HF_MMAUDIO, WeightFile, load_state_dict_strict, module_shapes

FORMAT_VERSION = 1


def config_to_dict(config: MMDiTConfig) -> dict[str, Any]:
    return asdict(config)


def config_from_dict(data: dict[str, Any]) -> MMDiTConfig:
    known = {f.name for f in fields(MMDiTConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown network config fields: {unknown}")
    data = dict(data)
    if isinstance(data.get("sequence"), dict):
        data["sequence"] = SequenceConfig(**data["sequence"])
    return MMDiTConfig(**data)


def _atomic_write(path: Path, write) -> None:
    atomic_write(path, lambda tmp: write(str(tmp)))


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """``x``, ``x.safetensors`` or ``x.json`` -> (weights, config) paths."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def save_network(
    path: str | Path,
    net: MMDiT,
    *,
    preset: str | None = None,
    encoder_set: str = "mmaudio",
    objective: str | None = None,
    ema_sigma_rel: float | None = None,
    provenance: dict[str, Any] | None = None,
    **extra: Any,
) -> tuple[Path, Path]:
    """Write weights (safetensors) and config (JSON), each atomically; returns both paths.

    The JSON holds the preset name and the resolved network config (with its sequence config),
    the encoder set the feature
    dimensions belong to, the training objective, the EMA sigma_rel the weights were
    synthesised at (None: raw weights) and provenance. Latent mean/std live in the weights.
    """
    weights, config = checkpoint_paths(path)
    state = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    doc = {
        "format": FORMAT_VERSION,
        "preset": preset,
        "network": config_to_dict(net.config),
        "encoder_set": encoder_set,
        "objective": objective,
        "ema_sigma_rel": ema_sigma_rel,
        "provenance": provenance or {},
        **extra,
    }
    _atomic_write(weights, lambda tmp: save_tensors(tmp, state, metadata={"format": str(FORMAT_VERSION)}))
    _atomic_write(config, lambda tmp: Path(tmp).write_text(json.dumps(doc, indent=2, sort_keys=True)))
    return weights, config


def read_checkpoint_config(path: str | Path) -> dict[str, Any]:
    _, config = checkpoint_paths(path)
    problem = unreadable(config)
    if problem == "not found":
        raise FileNotFoundError(
            f"{config}: checkpoint config not found (a soundvcm checkpoint is NAME.json + NAME.safetensors)"
        )
    if problem is not None:
        raise OSError(f"{config}: checkpoint config {problem}")
    try:
        doc = json.loads(config.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{config}: not a soundvcm model (not a JSON checkpoint config: {exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("network"), dict):
        what = "a feature cache's meta.json" if isinstance(doc, dict) and "rows_per_shard" in doc else "another file"
        raise ValueError(
            f"{config}: not a soundvcm model ({what}: no network config); a model is NAME.json + NAME.safetensors "
            "as written by `soundvcm train`, `soundvcm ema` or `soundvcm model init`"
        )
    return doc


def load_network(path: str | Path, device: str | torch.device = "cpu") -> MMDiT:
    """Build the network from ``NAME.json`` and load ``NAME.safetensors`` strictly."""
    weights, _ = checkpoint_paths(path)
    doc = read_checkpoint_config(path)
    try:
        net = MMDiT(config_from_dict(doc["network"]))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{checkpoint_paths(path)[1]}: not a soundvcm model (bad network config: {exc})") from None
    problem = unreadable(weights)
    if problem is not None:
        raise (FileNotFoundError if problem == "not found" else OSError)(f"{weights}: checkpoint weights {problem}")
    try:
        state = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{weights}: unreadable safetensors file ({exc})") from exc
    load_state_dict_strict(net, state, source=str(weights))
    return net.to(device).eval()


# ----- MMAudio --------------------------------------------------------------------------------
def detect_mmaudio_variant(state: dict[str, Tensor]) -> str:
    """Name the MMAudio preset a state dict belongs to, from its shapes."""
    try:
        latent_dim = state["final_layer.conv.weight"].shape[0]
        hidden = state["clip_cond_proj.weight"].shape[0]
    except KeyError as exc:
        raise ValueError(f"not an MMAudio network state dict (no {exc.args[0]})") from exc
    joint = len({k.split(".")[1] for k in state if k.startswith("joint_blocks.")})
    fused = len({k.split(".")[1] for k in state if k.startswith("fused_blocks.")})
    v2 = "clip_input_proj.2.w1.weight" in state
    for name, cfg in NETWORK_PRESETS.items():
        if (cfg.latent_dim, cfg.hidden_dim, cfg.num_joint, cfg.fused_depth, cfg.v2) == (
            latent_dim,
            hidden,
            joint,
            fused,
            v2,
        ) and name != "debug":
            return name
    raise ValueError(
        f"no MMAudio preset has latent_dim={latent_dim}, hidden={hidden}, joint={joint}, fused={fused}, v2={v2}"
    )


def read_mmaudio_state(path: str | Path) -> dict[str, Tensor]:
    """Read an MMAudio ``.pth`` network checkpoint safely (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable PyTorch weights file ({exc})") from exc
    if isinstance(state, dict) and "weights" in state and isinstance(state["weights"], dict):
        state = state["weights"]  # a training checkpoint (_ckpt_last.pth)
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict of tensors")
    return state


MMAUDIO_DERIVED_BUFFERS = ("t_embed.freqs", "latent_rot", "clip_rot")
"""Buffers that released MMAudio files may hold although they follow from the config (MMAudio's own
``load_weights`` deletes them before its strict load)."""


def _mmaudio_layout(rot: Tensor) -> Tensor:
    """Our RoPE table (1, N, hd/2, 2: cos, sin) in MMAudio's (1, N, hd/2, 2, 2) rotation-matrix layout."""
    cos, sin = rot[..., 0], rot[..., 1]
    return torch.stack([cos, -sin, sin, cos], dim=-1).unflatten(-1, (2, 2))


def drop_derived_buffers(state: dict[str, Tensor], net: MMDiT) -> dict[str, Tensor]:
    """``state`` without MMAudio's derived buffers, after checking each equals what ``net`` computes."""
    seq = net.sequence  # the trained lengths, which the released file's tables were made for
    latent_rot, clip_rot = net.rotations(seq.latent_seq_len, seq.clip_seq_len, torch.device("cpu"))
    ours: dict[str, Tensor] = {
        "t_embed.freqs": cast(Tensor, net.t_embed.freqs),
        "latent_rot": _mmaudio_layout(latent_rot),
        "clip_rot": _mmaudio_layout(clip_rot),
    }
    kept = dict(state)
    for key in MMAUDIO_DERIVED_BUFFERS:
        if key not in kept:
            continue
        value, expected = kept.pop(key).float(), ours[key].float()
        if value.shape != expected.shape or not torch.allclose(value, expected, rtol=1e-5, atol=1e-6):
            raise ValueError(
                f"{key} in the file ({tuple(value.shape)}) is not the buffer this network computes "
                f"({tuple(expected.shape)}): the file belongs to another configuration or duration"
            )
    return kept


def mmaudio_to_soundvcm(state: dict[str, Tensor], variant: str | None = None) -> MMDiT:
    """An MMDiT carrying MMAudio weights: MMAudio's time convention inside, final layer on the
    global condition (issue #55 as released), plus a zero-initialised offset embedder so it
    reproduces MMAudio exactly at s = t and can start velocity-consistency training."""
    variant = variant or detect_mmaudio_variant(state)
    config = replace(NETWORK_PRESETS[variant], mmaudio_time=True, final_uses_extended=False, offset_embedding=True)
    net = MMDiT(config)
    fresh = net.state_dict()
    merged = drop_derived_buffers(state, net)
    for k in fresh:
        if k.startswith("offset_embed.") and k not in merged:
            merged[k] = fresh[k]
    load_state_dict_strict(net, merged, source=f"MMAudio {variant} state dict")
    return net.eval()


def _mmaudio_file(variant: str, md5: str, description: str) -> WeightFile:
    def shapes() -> dict[str, tuple[int, ...]]:
        return module_shapes(MMDiT(replace(NETWORK_PRESETS[variant], offset_embedding=False)))

    name = f"mmaudio_{variant}"
    return WeightFile(name, f"{name}.pth", f"{HF_MMAUDIO}/{name}.pth", md5, description, shapes=shapes)


MMAUDIO_NETWORKS: dict[str, WeightFile] = {
    w.name: w
    for w in [
        _mmaudio_file("small_16k", "af93cde404179f58e3919ac085b8033b", "MMAudio network, small, 16 kHz"),
        _mmaudio_file("small_44k", "babd74c884783d13701ea2820a5f5b6d", "MMAudio network, small, 44.1 kHz"),
        _mmaudio_file("medium_44k", "5a56b6665e45a1e65ada534defa903d0", "MMAudio network, medium, 44.1 kHz"),
        _mmaudio_file("large_44k", "fed96c325a6785b85ce75ae1aafd2673", "MMAudio network, large, 44.1 kHz"),
        _mmaudio_file("large_44k_v2", "01ad4464f049b2d7efdaa4c1a59b8dfe", "MMAudio network, large v2, 44.1 kHz"),
    ]
}
"""The released MMAudio networks (their official files), by weights name."""


def is_registered_mmaudio(name: str | Path) -> bool:
    """A registered MMAudio network's name (``mmaudio_small_16k``...) that is not a local path."""
    return str(name) in MMAUDIO_NETWORKS and not Path(name).exists()
