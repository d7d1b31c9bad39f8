"""``soundvcm bench train``: one optimizer step of each objective on the same network and data.

A training step is the trainer's own :func:`~soundvcm.training.step.optimization_step`: the
objective's loss (its extra no-grad or JVP evaluations included), backward, gradient clipping
and AdamW, on random features of the preset's shapes. Each
objective gets one warm-up step and ``steps`` timed steps; peak memory is measured on one more
step (CUDA allocator peak, or torch's CPU allocations replayed from the profiler). Ratios are
taken within the run.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

from soundvcm.bench.measure import peak_memory_mb
from soundvcm.conditions import Batch
from soundvcm.device import compile_module, select_device
from soundvcm.network.mmdit import MMDiT, network_preset
from soundvcm.network.protocol import autocast
from soundvcm.objectives import OBJECTIVE_PRESETS, build_objective
from soundvcm.precision import resolve_precision
from soundvcm.training.parallel import LocalEngine
from soundvcm.training.step import optimization_step


@dataclass(frozen=True)
class TrainBenchConfig:
    preset: str = "small_16k"
    batch: int = 8
    steps: int = 2
    device: str = "cpu"
    precision: str = "fp32"  # auto | fp32 | bf16 (soundvcm.precision: the train stage's choice)
    compile: bool = False
    objectives: tuple[str, ...] = ("fm", "vcm", "meanflow")


def _batch(net: MMDiT, b: int, device) -> Batch:
    g = torch.Generator().manual_seed(0)
    seq, cfg = net.sequence, net.config
    cond = {
        "clip": torch.randn(b, seq.clip_seq_len, cfg.clip_dim, generator=g),
        "sync": torch.randn(b, seq.sync_seq_len, cfg.sync_dim, generator=g),
        "text": torch.randn(b, cfg.text_seq_len, cfg.text_dim, generator=g),
    }
    x0 = torch.randn(b, seq.latent_seq_len, cfg.latent_dim, generator=g)
    return Batch(x0=x0.to(device), conditions={k: v.to(device) for k, v in cond.items()})


def run_train_bench(cfg: TrainBenchConfig) -> list[dict[str, Any]]:
    device = select_device(cfg.device)  # "auto" (the CLI's default) too
    plan = resolve_precision(cfg.precision, device, ("train",))
    rows = []
    for name in cfg.objectives:
        torch.manual_seed(0)
        net = MMDiT(network_preset(cfg.preset)).to(device).train()
        model = autocast(compile_module(net, device)[0] if cfg.compile else net, plan.dtype("train"))
        preset = OBJECTIVE_PRESETS[name]
        objective = build_objective(name, 300_000, preset.config)
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=1e-6)
        batch = _batch(net, cfg.batch, device)
        gen = torch.Generator(device=device).manual_seed(1)

        def step(model=model, objective=objective, optimizer=optimizer, batch=batch, gen=gen):
            optimization_step(LocalEngine(model, objective), [(batch, gen)], optimizer, 1_000, lr=1e-4, grad_clip=1.0)

        step()  # warm-up (and compilation)
        times = []
        for _ in range(cfg.steps):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        memory = peak_memory_mb(step, device)
        rows.append(
            {
                "objective": name,
                "step_s": seconds,
                "samples_per_s": cfg.batch / seconds,
                "peak_mb": memory,
                "precision": plan.to_dict(),
            }
        )
        del net, model, optimizer
    return rows


def table(rows: list[dict[str, Any]], cfg: TrainBenchConfig) -> str:
    base = {r["objective"]: r for r in rows}
    fm = base.get("fm")
    plan = rows[0]["precision"]
    lines = [
        f"## Training step, {cfg.preset}, batch {cfg.batch}, {plan['device']}, {plan['stages']['train']}"
        f"{', compiled' if cfg.compile else ''}\n",
        "| objective | step s | samples/s | peak memory MB | step vs FM | memory vs FM |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        st = f"{r['step_s'] / fm['step_s']:.2f}x" if fm else "-"
        mem = f"{r['peak_mb'] / fm['peak_mb']:.2f}x" if fm and fm["peak_mb"] > 0 else "-"
        lines.append(
            f"| {r['objective']} | {r['step_s']:.2f} | {r['samples_per_s']:.2f} | {r['peak_mb']:.0f} | {st} | {mem} |"
        )
    if "vcm" in base and "meanflow" in base:
        lines.append(f"\nVCM step / MeanFlow step: {base['vcm']['step_s'] / base['meanflow']['step_s']:.2f}x")
    return "\n".join(lines)
