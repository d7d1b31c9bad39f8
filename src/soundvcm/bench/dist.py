"""``soundvcm bench dist``: the data-parallel engines on this machine's CPUs (gloo).

One process, then 2 ranks under each engine (DDP, the flat all-reduce, FSDP2), each rank with
``threads`` CPU threads and the same per-rank batch, run the trainer's own step
(:func:`~soundvcm.training.step.optimization_step`) on random features of the preset's shapes:
one warm-up step, then ``steps`` timed steps (ranks meet at a barrier around each). The rounds
are interleaved (1 process, DDP, all-reduce, FSDP, then again), so load that comes and goes falls
on all of them alike; the table gives medians and ratios within the run.

Memory per rank is counted from the tensors each rank holds after a step: parameters, gradients
and AdamW moments (a sharded tensor counts its local shard), plus the process's peak RSS.
"""

from __future__ import annotations

import os
import resource
import socket
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

ENGINES = ("local", "ddp", "allreduce", "fsdp")


@dataclass(frozen=True)
class DistBenchConfig:
    preset: str = "lite_small"
    objective: str = "vcm"
    batch: int = 4  # per rank
    steps: int = 3
    rounds: int = 2
    threads: int = 1
    engines: tuple[str, ...] = ENGINES


def _local_bytes(tensors) -> int:
    total = 0
    for t in tensors:
        if t is None:
            continue
        local = t.to_local() if type(t).__name__ == "DTensor" else t
        total += local.numel() * local.element_size()
    return total


def _worker(rank: int, world: int, port: int, cfg: DistBenchConfig, engine: str, result: str) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(cfg.threads)
    import torch.distributed as dist

    from soundvcm.bench.train import _batch
    from soundvcm.network.mmdit import MMDiT, network_preset
    from soundvcm.objectives import OBJECTIVE_PRESETS, build_objective
    from soundvcm.training.parallel import build_engine
    from soundvcm.training.step import optimization_step

    if world > 1:
        dist.init_process_group("gloo")
    torch.manual_seed(0)
    device = torch.device("cpu")
    net = MMDiT(network_preset(cfg.preset)).train()
    objective = build_objective(cfg.objective, 300_000, OBJECTIVE_PRESETS[cfg.objective].config)
    runner = build_engine(engine, net, net, objective, device)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), weight_decay=1e-6)
    batch = _batch(net, cfg.batch, device)
    gen = torch.Generator().manual_seed(1 + rank)

    def barrier() -> None:
        if world > 1:
            dist.barrier()

    def step() -> None:
        runner.before_batch()
        optimization_step(runner, [(batch, gen)], optimizer, 1_000, lr=1e-4, grad_clip=1.0)

    step()  # warm-up
    times = []
    for _ in range(cfg.steps):
        barrier()
        start = time.perf_counter()
        step()
        barrier()
        times.append(time.perf_counter() - start)
    moments = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor) and v.ndim > 0]
    out = {
        "step_s": statistics.median(times),
        "params_mb": _local_bytes(params) / 2**20,
        "grads_mb": _local_bytes([p.grad for p in params]) / 2**20,
        "optimizer_mb": _local_bytes(moments) / 2**20,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if rank == 0:
        Path(result).write_text(repr(out))
    barrier()
    if world > 1:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _measure(cfg: DistBenchConfig, engine: str) -> dict[str, float]:
    import ast

    import torch.multiprocessing as mp

    world = 1 if engine == "local" else 2
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.txt"
        mp.spawn(_worker, args=(world, _free_port(), cfg, engine, str(result)), nprocs=world, join=True)
        return ast.literal_eval(result.read_text())


def run_dist_bench(cfg: DistBenchConfig, progress=None) -> list[dict[str, Any]]:
    """Median step time and memory per rank for each engine (one process = ``local``)."""
    runs: dict[str, list[dict[str, float]]] = {e: [] for e in cfg.engines}
    for _ in range(cfg.rounds):
        for engine in cfg.engines:
            runs[engine].append(_measure(cfg, engine))
            if progress is not None:
                progress(engine, runs[engine][-1])
    rows = []
    for engine, results in runs.items():
        row: dict[str, Any] = {"engine": engine, "ranks": 1 if engine == "local" else 2}
        for key in results[0]:
            row[key] = statistics.median(r[key] for r in results)
        row["step_s_runs"] = [r["step_s"] for r in results]
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]], cfg: DistBenchConfig) -> str:
    by = {r["engine"]: r for r in rows}
    local, ddp = by.get("local"), by.get("ddp")
    lines = [
        f"## Data-parallel step, {cfg.preset}, {cfg.objective}, batch {cfg.batch} per rank, "
        f"{cfg.threads} thread(s) per rank, CPU (gloo), median of {cfg.rounds} rounds x {cfg.steps} steps\n",
        "| engine | ranks | step s | vs 1 process | params MB/rank | grads MB/rank | AdamW MB/rank | "
        "params+grads+AdamW MB/rank | vs DDP | params+AdamW vs DDP | peak RSS MB/rank |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        total = r["params_mb"] + r["grads_mb"] + r["optimizer_mb"]
        vs_local = f"{r['step_s'] / local['step_s']:.2f}x" if local else "-"
        if ddp:
            ddp_total = ddp["params_mb"] + ddp["grads_mb"] + ddp["optimizer_mb"]
            vs_ddp = f"{total / ddp_total:.2f}x"
            po = (r["params_mb"] + r["optimizer_mb"]) / (ddp["params_mb"] + ddp["optimizer_mb"])
            vs_ddp_po = f"{po:.2f}x"
        else:
            vs_ddp = vs_ddp_po = "-"
        lines.append(
            f"| {r['engine']} | {r['ranks']} | {r['step_s']:.3f} | {vs_local} | {r['params_mb']:.1f} | "
            f"{r['grads_mb']:.1f} | {r['optimizer_mb']:.1f} | {total:.1f} | {vs_ddp} | {vs_ddp_po} | "
            f"{r['rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def config_dict(cfg: DistBenchConfig) -> dict[str, Any]:
    return asdict(cfg)
