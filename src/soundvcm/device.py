"""Device choice, the process's place in a torchrun job, and per-stage wall-clock timing.

Torch is imported inside the functions: the command line checks ``--device`` while it parses,
before (and without) loading torch."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from soundvcm.console import StageStatus

if TYPE_CHECKING:
    import torch


DEVICES = "auto, cpu, cuda, cuda:N or mps"


def check_device(name: str) -> str:
    """``name`` if it names a device soundvcm runs on (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``),
    else a ValueError in one line (torch's own message lists two dozen back ends)."""
    kind, _, index = name.partition(":")
    if name == "auto" or (kind in ("cpu", "cuda", "mps") and (not index or (kind == "cuda" and index.isdigit()))):
        return name
    raise ValueError(f"unknown device {name!r}: use {DEVICES}")


def select_device(preference: str = "auto") -> torch.device:
    """``auto``: cuda, then mps, then cpu."""
    import torch

    if check_device(preference) != "auto":
        device = torch.device(preference)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for but no CUDA GPU is available")
        if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError("--device mps was asked for but this machine has no MPS device")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment (0, 1, 0 outside torchrun),
    read when asked (never at import): training and extraction alike."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def compile_module(module: torch.nn.Module, device: torch.device) -> tuple[Any, str | None]:
    """``torch.compile(module)``, or the module itself and why not.

    On a CPU where inductor vectorises with AVX2, torch 2.13's generated kernels turn the
    velocity network's output into NaN (measured here with ``ATEN_CPU_CAPABILITY=avx2``: scalar
    inductor code and AVX512 code both match eager), so compilation is skipped there with a note.
    """
    import torch

    if torch.device(device).type == "cpu":
        from torch._inductor.cpu_vec_isa import pick_vec_isa

        isa = str(pick_vec_isa())
        if isa.startswith("avx2"):
            return module, (
                "torch.compile skipped: inductor's AVX2 CPU kernels give NaN for this network on torch "
                f"{torch.__version__.split('+')[0]}; running eager"
            )
    return torch.compile(module), None


class StageTimer:
    """Wall-clock seconds per named stage (synchronising the GPU at stage edges); with a
    :class:`soundvcm.console.StageStatus`, each stage also shows on the terminal while it runs."""

    def __init__(self, device: torch.device, status: StageStatus | None = None):
        self.device, self.status = device, status
        self.times: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        try:
            with self.status.stage(name) if self.status is not None else nullcontext():
                yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - start
