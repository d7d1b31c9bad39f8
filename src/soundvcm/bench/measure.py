"""Timing and peak-memory measurement shared by the benchmarks."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch


@contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence what C++ code writes to file descriptor 2 (the profiler's ``USDT ... profiler_start``
    lines and allocator warnings) so benchmark tables stay clean; Python's stderr is flushed first."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_memory_mb(fn: Callable[[], object], device: torch.device | str = "cpu") -> float:
    """Peak bytes allocated by torch while ``fn`` runs, above what was live before, in MiB.

    On CUDA this is the allocator's own peak. On CPU it replays the profiler's allocation and
    free events in time order (allocations attributed to ops, frees as ``[memory]`` events).
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with quiet_native_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.events() if e.device_type.name == "CPU" and e.self_cpu_memory_usage != 0]
    events.sort(key=lambda e: e.time_range.start)
    live = peak = 0
    for e in events:
        live += e.self_cpu_memory_usage
        peak = max(peak, live)
    return peak / 2**20


def time_call(fn: Callable[[], object], repeats: int = 1, device: torch.device | str = "cpu") -> float:
    """Mean wall-clock seconds of ``fn`` over ``repeats`` calls (synchronising CUDA)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / repeats
