"""``soundvcm bench network``: parameter count, per-NFE latency and sampler totals.

Times one network evaluation (conditions prepared once, as the samplers do) at batch 1 and 8,
and whole samplers at 1, 4 and 25 x 2 NFE, plus peak inference memory, for a preset. With
``--reference-mmaudio DIR`` (a checkout of MMAudio's source, never part of this repo) MMAudio's
own network with the same weights is timed in the same run, for a ratio.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from soundvcm.bench.measure import peak_memory_mb, time_call
from soundvcm.device import compile_module
from soundvcm.network.mmdit import MMDiT, network_preset
from soundvcm.network.protocol import autocast
from soundvcm.precision import resolve_precision
from soundvcm.sampling import ConsistencyOptions, EulerOptions, initial_noise, sample

VCM1, VCM4 = ConsistencyOptions(1), ConsistencyOptions(4)
FM25 = EulerOptions(25, cfg_scale=4.5)


@dataclass(frozen=True)
class NetworkBenchConfig:
    preset: str = "small_16k"
    batch_sizes: tuple[int, ...] = (1, 8)
    repeats: int = 3
    device: str = "cpu"
    precision: str = "fp32"  # auto | fp32 | bf16 (soundvcm.precision: the network stage's choice)
    compile: bool = False
    reference_mmaudio: str | None = None


def _conditions(net: MMDiT, b: int, device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    seq, cfg = net.sequence, net.config
    return {
        "clip": torch.randn(b, seq.clip_seq_len, cfg.clip_dim, generator=g).to(device),
        "sync": torch.randn(b, seq.sync_seq_len, cfg.sync_dim, generator=g).to(device),
        "text": torch.randn(b, cfg.text_seq_len, cfg.text_dim, generator=g).to(device),
    }


def _reference(net: MMDiT, src: str, device):
    """MMAudio's own network (imported from a checkout outside this repo) with our weights."""
    sys.path.insert(0, str(Path(src).resolve()))
    from mmaudio.model.networks import get_my_mmaudio

    from soundvcm.network.checkpoint import detect_mmaudio_variant

    ref = get_my_mmaudio(detect_mmaudio_variant(net.state_dict())).to(device).eval()
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("offset_embed.")}
    ref.load_state_dict(state, strict=True)
    return ref


@torch.inference_mode()
def _bench_batch(net: MMDiT, fn, b: int, cfg: NetworkBenchConfig, ref, dtype) -> dict[str, float]:
    """Timings at batch size b: one NFE, the samplers, and the reference network if given."""
    device = torch.device(cfg.device)
    model = autocast(fn, dtype)
    prepared = net.prepare(_conditions(net, b, device))
    null = net.prepare_null(b)
    x = initial_noise((b, net.sequence.latent_seq_len, net.config.latent_dim), seed=0, device=device)
    t = torch.full((b,), 0.5, device=device)

    def one_nfe():
        return model(x, t, t, prepared)

    one_nfe()  # warm-up (and compilation)
    rows = {
        f"nfe_s@b{b}": time_call(one_nfe, cfg.repeats, device),
        f"vcm@1_s@b{b}": time_call(lambda: sample(model, x, prepared, VCM1), cfg.repeats, device),
        f"vcm@4_s@b{b}": time_call(lambda: sample(model, x, prepared, VCM4)),
        f"fm@50_s@b{b}": time_call(lambda: sample(model, x, prepared, FM25, null)),
    }
    if ref is not None:
        c = _conditions(net, b, device)
        pre = ref.preprocess_conditions(c["clip"], c["sync"], c["text"])
        ref.predict_flow(x, t, pre)
        rows[f"mmaudio_nfe_s@b{b}"] = time_call(lambda: ref.predict_flow(x, t, pre), cfg.repeats, device)
        ours = time_call(one_nfe, cfg.repeats, device)  # again, right after the reference
        rows[f"nfe_ratio_vs_mmaudio@b{b}"] = ours / rows[f"mmaudio_nfe_s@b{b}"]
    if b == cfg.batch_sizes[0]:
        rows[f"peak_mem_mb@b{b}"] = peak_memory_mb(one_nfe, device)
    return rows


def run_network_bench(cfg: NetworkBenchConfig) -> dict[str, Any]:
    device = torch.device(cfg.device)
    torch.manual_seed(0)
    net = MMDiT(network_preset(cfg.preset)).to(device).eval()
    plan = resolve_precision(cfg.precision, device, ("network",))
    dtype = plan.dtype("network")
    fn = compile_module(net, device)[0] if cfg.compile else net
    rows: dict[str, Any] = {
        "preset": cfg.preset,
        "params": sum(p.numel() for p in net.parameters()),
        "precision": plan.to_dict(),
    }
    ref = _reference(net, cfg.reference_mmaudio, device) if cfg.reference_mmaudio else None
    for b in cfg.batch_sizes:
        rows.update(_bench_batch(net, fn, b, cfg, ref, dtype))
    return rows


def table(rows: dict[str, Any]) -> str:
    lines = [f"network `{rows['preset']}`: {rows['params']:,} parameters", "", "| metric | value |", "|---|---|"]
    for k, v in rows.items():
        if k == "precision":
            v = v["stages"]["network"]
        if k in ("preset", "params"):
            continue
        lines.append(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |")
    return "\n".join(lines)
