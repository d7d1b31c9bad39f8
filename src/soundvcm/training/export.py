"""Exporting a run's weights: the post-hoc EMA synthesised at a sigma_rel, saved as a soundvcm
checkpoint (safetensors + JSON with the run's :class:`~soundvcm.spec.ModelSpec`)."""

from __future__ import annotations

from pathlib import Path

from soundvcm.network.checkpoint import save_network
from soundvcm.network.mmdit import MMDiT
from soundvcm.spec import ModelSpec
from soundvcm.training.finetune import merge_lora
from soundvcm.training.posthoc_ema import synthesize


def ema_name(sigma_rel: float) -> str:
    """File stem of an exported EMA checkpoint (no dots: the checkpoint suffix logic keeps it whole)."""
    return "ema_sigma" + f"{sigma_rel:g}".replace(".", "p")


def ema_network(config, weights: dict) -> MMDiT:
    """A fresh network of ``config`` carrying the given (EMA) weights, LoRA adapters merged;
    non-float buffers stay as built."""
    weights = merge_lora(weights)
    net = MMDiT(config)
    state = net.state_dict()
    state.update({k: v.to(state[k].dtype) for k, v in weights.items() if k in state})
    net.load_state_dict(state)
    return net


def export_ema_checkpoint(
    run: Path, sigma_rel: float, step: int, config, spec: ModelSpec, out=None, precision: dict | None = None
) -> tuple[Path, dict]:
    """Synthesise ``run``'s post-hoc EMA at ``sigma_rel`` and ``step``; save it (default RUN/ema_sigma...).
    ``precision``: what the run trained in and what its features were extracted in (kept in provenance)."""
    weights, info = synthesize(Path(run) / "ema", sigma_rel, step)
    path, _ = save_network(
        out or Path(run) / ema_name(sigma_rel),
        ema_network(config, weights),
        preset=spec.network,
        encoder_set=spec.encoder_set,
        objective=spec.objective,
        spec=spec.to_dict(),
        ema_sigma_rel=sigma_rel,
        provenance={"kind": "trained", "step": info["step"], "ema": info, "precision": precision or {}},
    )
    return path, info
