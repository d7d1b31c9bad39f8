"""Fine-tuning from a checkpoint: where the weights come from, which parameters train, and LoRA.

``soundvcm train --init SOURCE`` starts a new run from a soundvcm checkpoint, a shipped model's
name, a hub id (``org/name[@rev]``), or a registered MMAudio network (``mmaudio_small_16k``: its
released file, converted with a zero-initialised offset embedder, so the flow-matching model is
reproduced exactly at s = t and any objective, VCM included, continues it). The network config
(MMAudio's time convention included) comes from the source; the clip length from the caches.

Two ways to train less than everything (both saved in the run's config.json):

* ``trainable=PATTERN,...``: only parameters whose names match one of these regular expressions
  train (e.g. ``trainable=offset_embed,adaLN_modulation``); the rest are frozen.
* ``lora_rank=R``: low-rank adapters W + (alpha / R) B A on the attention and MLP projections
  (``lora_targets``), with the base weights frozen; exported checkpoints hold the merged W.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from soundvcm.encoders import encoder_spec
from soundvcm.hub import resolve_model
from soundvcm.network.checkpoint import (
    MMAUDIO_NETWORKS,
    checkpoint_paths,
    config_from_dict,
    is_registered_mmaudio,
    mmaudio_to_soundvcm,
    read_checkpoint_config,
    read_mmaudio_state,
)
from soundvcm.network.mmdit import MMDiT
from soundvcm.network.protocol import Autocast
from soundvcm.training.checkpoint import NonFiniteWeights, first_nonfinite
from soundvcm.weights import load_state_dict_strict, resolve

LORA_TARGETS = (r"attn\.qkv$", r"linear1$", r"ffn\.w[123]$")
"""Attention projections and the MLPs (where they are linear layers; ConvMLPs stay full-rank)."""


def init_preset(source: str | Path) -> str | None:
    """The network preset a ``--init`` source was built from."""
    if is_registered_mmaudio(source):
        return str(source).removeprefix("mmaudio_")
    return read_checkpoint_config(resolve_model(source)).get("preset")


def load_init(source: str | Path, encoder_set: str, duration: float) -> MMDiT:
    """The network of ``source`` for caches of ``encoder_set`` at ``duration`` seconds (strict load)."""
    if is_registered_mmaudio(source):
        name = str(source)
        net = mmaudio_to_soundvcm(read_mmaudio_state(resolve(MMAUDIO_NETWORKS[name])), name.removeprefix("mmaudio_"))
        config, state = net.config, net.state_dict()
    else:
        path = resolve_model(source)
        config = config_from_dict(read_checkpoint_config(path)["network"])
        weights, _ = checkpoint_paths(path)
        state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(weights)).items()}
    bad = first_nonfinite(state)
    if bad is not None:
        raise NonFiniteWeights(f"--init {source}: {bad} holds NaN or inf; these weights cannot start a run")
    try:
        encoder_spec(encoder_set).check_network(config)
    except ValueError as exc:
        raise ValueError(f"--init {source}: {exc}") from None
    config = replace(config, sequence=replace(config.sequence, duration=duration))
    net = MMDiT(config)  # its RoPE tables (not saved) follow the clip length
    load_state_dict_strict(net, state, source=f"--init {source}")
    return net


def load_teacher(objective, student: MMDiT, encoder_set: str, dtype: torch.dtype | None) -> None:
    """The frozen flow-matching teacher(s) of a VCM objective whose ``teacher.source`` is set (issue 33;
    :func:`soundvcm.objectives.guidance.teacher_velocity`), under the run's autocast, on the student's
    device. Their latent statistics must be the student's: all read the same normalised latents."""
    spec = getattr(getattr(objective, "config", None), "teacher", None)
    if spec is None or not spec.source:
        return
    for attribute, source in (("teacher", spec.source), ("uncaptioned_teacher", spec.uncaptioned_source)):
        if not source:
            continue
        teacher = load_init(source, encoder_set, student.config.sequence.duration).to(student.latent_mean.device)
        for name in ("latent_mean", "latent_std"):
            if not torch.allclose(getattr(teacher, name).float(), getattr(student, name).float(), rtol=1e-3, atol=1e-4):
                raise ValueError(
                    f"teacher {source}: its {name} differs from the student's; start the student from "
                    "the teacher (--init) or from a run on the same caches"
                )
        teacher.eval().requires_grad_(False)
        setattr(objective, attribute, Autocast(teacher, dtype) if dtype is not None else teacher)


def freeze_except(net: nn.Module, patterns: tuple[str, ...]) -> list[str]:
    """Freeze every parameter whose name matches none of ``patterns``; the trainable names."""
    compiled = [re.compile(p) for p in patterns]
    trainable = []
    for name, p in net.named_parameters():
        keep = any(c.search(name) for c in compiled)
        p.requires_grad_(keep and p.requires_grad)
        if p.requires_grad:
            trainable.append(name)
    if not trainable:
        examples = ", ".join(n for n, _ in list(net.named_parameters())[:4])
        raise ValueError(f"trainable={','.join(patterns)} matches no parameter (names look like {examples}, ...)")
    return trainable


class LoRALinear(nn.Linear):
    """A linear layer plus a low-rank update: y = x W^T + b + (alpha / r) x A^T B^T. W and b are
    the original layer's (frozen), B starts at zero so the layer starts exactly as it was."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__(base.in_features, base.out_features, bias=base.bias is not None, device=base.weight.device)
        self.weight, self.bias = base.weight, base.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        self.lora_scale: Tensor
        self.register_buffer("lora_scale", torch.tensor(alpha / rank))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias) + self.lora_scale * F.linear(F.linear(x, self.lora_A), self.lora_B)


def add_lora(net: nn.Module, rank: int, alpha: float = 0.0, targets: tuple[str, ...] = LORA_TARGETS) -> list[str]:
    """Wrap the linear layers whose names match ``targets``; freeze everything else. alpha 0: alpha = rank."""
    if rank < 1:
        raise ValueError(f"lora_rank must be >= 1, got {rank}")
    compiled = [re.compile(t) for t in targets]
    wrapped = []
    for name, module in list(net.named_modules()):
        if (
            isinstance(module, nn.Linear)
            and not isinstance(module, LoRALinear)
            and any(c.search(name) for c in compiled)
        ):
            parent_name, _, child = name.rpartition(".")
            parent = net.get_submodule(parent_name) if parent_name else net
            setattr(parent, child, LoRALinear(module, rank, alpha or float(rank)))
            wrapped.append(name)
    if not wrapped:
        raise ValueError(f"lora_targets={','.join(targets)} matches no linear layer")
    for name, p in net.named_parameters():
        p.requires_grad_(".lora_" in name)
    return wrapped


def merge_lora(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A plain state dict: W + scale B A folded into each adapted weight, adapter entries dropped."""
    out = {k: v for k, v in state.items() if ".lora_" not in k}
    for key in state:
        if key.endswith(".lora_A"):
            base = key[: -len(".lora_A")]
            a, b, scale = state[key].float(), state[base + ".lora_B"].float(), state[base + ".lora_scale"].float()
            weight = state[base + ".weight"]
            out[base + ".weight"] = (weight.float() + scale * b @ a).to(weight.dtype)
    return out
