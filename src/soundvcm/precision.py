"""Numeric precision per stage, decided in one place from what the device can do (issues 22, 35).

Stages: ``visual``, ``text``, ``vocoder`` (with the latent decoder), ``network`` (inference) and
``train`` (the network's autocast). :func:`resolve_precision` turns a request (:data:`PRECISIONS`)
and a device into a :class:`PrecisionPlan`: each stage's choice, and why. ``auto``: on CUDA bf16
where the GPU supports it; on a CPU bf16 only where it computes bf16 **natively** (x86
``avx512_bf16``/``amx_bf16`` with PyTorch's kernels at AVX512 and oneDNN not capped below; Arm
``bf16``) **and** a measured check of the stage's kind of kernel (matmul, conv1d or conv2d; one
thread, 9 interleaved fp32/bf16 rounds, remembered per machine) finds it >= 10 % faster. The check
decides only when its rounds agree (:class:`KernelCheck`); where a busy machine scatters them, a
capability table decides and later processes measure again (up to three tries). Without native
bf16 (AVX2 only) bf16 is emulated, 40-90x *slower*: never chosen; other devices: fp32. ``fp32``/``bf16``
force every stage (a forced bf16 without native support runs, with a note; a bf16 ``vocoder`` keeps
HiFi-GAN's last stages in fp32). The plan goes into bench JSON, run configs, caches, checkpoints, ``doctor``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "fp32", "bf16")
STAGES = ("visual", "text", "vocoder", "network", "train")
INFERENCE_STAGES = ("visual", "text", "vocoder", "network")  # what generation runs (no "train")
# the kind of kernel that dominates each stage, for the measured check
STAGE_KERNELS = {"visual": "conv2d", "text": "matmul", "vocoder": "conv1d", "network": "matmul", "train": "matmul"}
SPEEDUP = 1.1  # bf16 must be at least this much faster than fp32 for auto to choose it
# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) that still include bf16 instructions
_BF16_ISAS = (
    "ALL",
    "AVX512_CORE_BF16",
    "AVX512_CORE_AMX",
    "AVX512_CORE_AMX_FP16",
    "AVX10_1_512_AMX",
    "AVX10_1_512_AMX_FP16",
    "AVX10_2_512",
    "AVX10_2_512_AMX_2",
    "AVX2_VNNI_2",
)


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The processor's name (``/proc/cpuinfo``, ``sysctl`` on macOS, else ``platform``)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if platform.system() == "Darwin":
        try:
            return (
                subprocess.run(
                    ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5
                ).stdout.strip()
                or platform.processor()
            )
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The processor's feature flags (x86 ``flags``, Arm ``Features``; macOS: ``bf16`` from sysctl)."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key = line.split(":", 1)[0].strip().lower()
                if key in ("flags", "features"):
                    flags.update(line.split(":", 1)[1].split())
    except OSError:
        pass
    if platform.system() == "Darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
            if out == "1":
                flags.add("bf16")
        except (OSError, subprocess.SubprocessError):
            pass
    return frozenset(flags)


def cpu_capability() -> str:
    """PyTorch's CPU kernel level (``AVX2``, ``AVX512``, ``DEFAULT``, ``SVE256``, ...)."""
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def amx_cpu() -> bool:
    """Does oneDNN run bf16 on AMX here (``amx_bf16``, and ONEDNN_MAX_CPU_ISA not capped below AMX)?"""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper().replace("ALL", "AMX")  # ALL: not capped
    return "amx_bf16" in cpu_flags() and "AMX" in cap


def native_bf16_cpu() -> tuple[bool, str]:
    """(does this CPU compute bf16 natively, the reason in words)."""
    flags, machine = cpu_flags(), platform.machine().lower()
    if machine in ("x86_64", "amd64", "i686", "x86"):
        native = sorted(flags & {"avx512_bf16", "amx_bf16"})
        if not native:
            return False, "no avx512_bf16/amx_bf16 flag: bf16 would be emulated (40-90x slower than fp32)"
        cap = cpu_capability()
        if not cap.startswith("AVX512"):
            return False, f"PyTorch's kernels run at {cap} (ATEN_CPU_CAPABILITY?): bf16 would be emulated"
        isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
        if isa not in _BF16_ISAS:
            return False, f"ONEDNN_MAX_CPU_ISA={isa} caps oneDNN below bf16"
        return True, f"native bf16 ({', '.join(native)})"
    if machine in ("arm64", "aarch64"):
        if "bf16" in flags:
            return True, "native bf16 (Arm bf16 feature)"
        return False, "no Arm bf16 feature: bf16 would be emulated"
    return False, f"{machine}: no known native bf16"


KERNELS = 3  # the version of the kernels and of the check below: an answer measured otherwise is measured again
ROUNDS = 9  # interleaved fp32/bf16 rounds per kernel
STABLE_SPREAD = 1.5  # a check whose per-round ratios spread more than this (q75 / q25) decides nothing
MAX_TRIES = 3  # processes that measure again while the remembered check is unstable


def _kernel(kind: str) -> tuple[Callable[[], object], int]:
    """A small, representative kernel of each stage kind, and how many calls make one timing."""
    import torch

    g = torch.Generator().manual_seed(0)
    if kind == "matmul":  # the network's and text encoder's linear layers
        a, b = torch.randn(128, 384, generator=g), torch.randn(384, 768, generator=g)
        return (lambda: a @ b), 4
    if kind == "conv1d":  # the vocoder's dilated residual convs, as HiFi-GAN runs them: 2-D over (B, C, 1, T)
        conv = torch.nn.Conv2d(128, 128, (1, 7), padding=(0, 9), dilation=(1, 3))  # channels-last
        x = torch.randn(1, 128, 1, 1024, generator=g).contiguous(memory_format=torch.channels_last)
        return (lambda: conv(x)), 2
    if kind == "conv2d":  # the visual encoder's depthwise + pointwise blocks, channels-last
        dw, pw = torch.nn.Conv2d(96, 96, 3, padding=1, groups=96), torch.nn.Conv2d(96, 192, 1)
        x = torch.randn(4, 96, 28, 28, generator=g).contiguous(memory_format=torch.channels_last)
        return (lambda: pw(dw(x))), 2
    raise ValueError(f"unknown kernel kind {kind!r}")


def _timed(fn: Callable[[], object], calls: int, dtype: torch.dtype | None) -> float:
    import torch

    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        return time.perf_counter() - start


def _cache_path():
    from pathlib import Path

    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "soundvcm" / "precision.json"


def _machine_key() -> str:
    """What the check's answer depends on: the processor, its flags and PyTorch's build."""
    import hashlib

    import torch

    flags = hashlib.md5(" ".join(sorted(cpu_flags())).encode()).hexdigest()[:12]
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL")
    return f"{cpu_model()}|{flags}|{cpu_capability()}|{isa}|torch {torch.__version__}|kernels {KERNELS}"


@dataclass(frozen=True)
class KernelCheck:
    """The fp32/bf16 time ratio of one kernel kind: the median of interleaved rounds, and how much the
    rounds agree (q75 / q25 of the per-round ratios). A busy moment makes the rounds disagree rather
    than shift all together, so only a *stable* check decides (issue 35: a check taken during a busy
    first run read conv2d 0.54x and conv1d 9.05x; idle, all three read 1.85x)."""

    kind: str
    ratio: float
    spread: float
    rounds: int
    tries: int = 1

    @property
    def stable(self) -> bool:
        return self.spread <= STABLE_SPREAD


def summarize(kind: str, ratios: list[float], tries: int = 1) -> KernelCheck:
    """A :class:`KernelCheck` from per-round ratios (the decision logic, testable on injected timings)."""
    x = sorted(ratios)

    def quantile(q: float) -> float:  # linear interpolation between order statistics
        pos = q * (len(x) - 1)
        lo = int(pos)
        return x[lo] + (x[min(lo + 1, len(x) - 1)] - x[lo]) * (pos - lo)

    q25, q75 = quantile(0.25), quantile(0.75)
    return KernelCheck(kind, quantile(0.5), q75 / q25 if q25 > 0 else float("inf"), len(ratios), tries)


def measure_ratios(kind: str, rounds: int = ROUNDS) -> list[float]:
    """fp32 time / bf16 time of the ``kind`` kernel on one core, per round: both warmed up first
    (oneDNN builds its primitives), then ``rounds`` rounds, each timing both precisions back to back
    in alternating order, so that a burst of other work lands on both sides of a round.

    One thread, because that ratio is what the instruction set decides and it holds when other work
    shares the machine: with both cores busy elsewhere, 2-thread timings measured bf16 at 0.65x while
    one thread (and the real stages) measured 1.8x (BENCHMARKS.md)."""
    import torch

    fn, calls = _kernel(kind)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ratios = []
    try:
        with torch.inference_mode():
            _timed(fn, 1, None), _timed(fn, 1, torch.bfloat16)
            for r in range(rounds):
                order = (None, torch.bfloat16) if r % 2 == 0 else (torch.bfloat16, None)
                times = {dtype: _timed(fn, calls, dtype) for dtype in order}
                ratios.append(times[None] / times[torch.bfloat16])
    finally:
        torch.set_num_threads(threads)
    return ratios


def measure_speedup(kind: str, repeats: int = ROUNDS) -> float:
    """The median fp32/bf16 ratio of ``repeats`` interleaved rounds (see :func:`measure_ratios`)."""
    return summarize(kind, measure_ratios(kind, repeats)).ratio


def _known() -> dict:
    """The remembered checks of every machine this home has seen (``~/.cache/soundvcm/precision.json``)."""
    import json

    try:
        known = json.loads(_cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def _remember(known: dict) -> None:
    import json

    from soundvcm.atomic import atomic_write

    with contextlib.suppress(OSError):  # a read-only home: measure again next time
        atomic_write(_cache_path(), lambda tmp: tmp.write_text(json.dumps(known, indent=1)))


@functools.cache
def kernel_check(kind: str) -> KernelCheck:
    """The check of ``kind`` on this machine, remembered in ``~/.cache/soundvcm/precision.json`` so
    every process makes the same choice: measured once, or again by the next processes (up to
    :data:`MAX_TRIES`) while the remembered one is unstable, so a busy first moment is not final;
    measured anew when the processor, torch or the kernels change, or on ``doctor --remeasure``."""
    known, key = _known(), _machine_key()
    entry = known.get(key, {}).get(kind) if isinstance(known.get(key), dict) else None
    tries = 1
    if isinstance(entry, dict):
        try:
            cached = KernelCheck(
                kind, float(entry["ratio"]), float(entry["spread"]), int(entry["rounds"]), int(entry["tries"])
            )
        except (KeyError, TypeError, ValueError):
            cached = None
        if cached is not None and (cached.stable or cached.tries >= MAX_TRIES):
            return cached
        tries = cached.tries + 1 if cached is not None else 1
    check = summarize(kind, measure_ratios(kind), tries)
    entry = {"ratio": round(check.ratio, 4), "spread": round(check.spread, 4), "rounds": check.rounds, "tries": tries}
    known.setdefault(key, {})[kind] = entry
    _remember(known)
    return check


def forget_checks() -> None:
    """Drop this machine's remembered checks (``soundvcm doctor --remeasure``): the next plan measures."""
    known = _known()
    if known.pop(_machine_key(), None) is not None:
        _remember(known)
    kernel_check.cache_clear()


def capability_table() -> tuple[str, str]:
    """What ``auto`` picks on a CPU with native bf16 when its check is unstable, by instruction set: AMX
    (Sapphire Rapids on): bf16 (1.8-3.4x measured on every stage); AVX512_BF16 without AMX (Zen 4/5):
    bf16 (1.85x on all three kernels, idle, issue 35); an Arm bf16 core: fp32 (never measured here)."""
    flags = cpu_flags()
    if "amx_bf16" in flags:
        return "bf16", "AMX: bf16 by the capability table"
    if "avx512_bf16" in flags:
        return "bf16", "AVX512_BF16 without AMX: bf16 by the capability table"
    return "fp32", "no measured table entry for this CPU: fp32"


def decide(check: KernelCheck, table: str) -> str:
    """bf16 or fp32 for a stage: a stable check decides (bf16 where >= :data:`SPEEDUP` faster); an
    unstable one defers to the capability table."""
    if not check.stable:
        return table
    return "bf16" if check.ratio >= SPEEDUP else "fp32"


@dataclass(frozen=True)
class PrecisionPlan:
    """What each stage runs in, and why (see the module docstring)."""

    requested: str
    device: str
    stages: dict[str, str] = field(default_factory=dict)  # stage -> "fp32" | "bf16"
    reason: str = ""
    speedups: dict[str, float] = field(default_factory=dict)  # stage -> measured fp32/bf16 time (CPU auto)
    notes: tuple[str, ...] = ()

    def dtype(self, stage: str) -> torch.dtype | None:
        """The autocast dtype of ``stage`` (None: plain fp32)."""
        import torch

        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; one of {', '.join(STAGES)}")
        return torch.bfloat16 if self.stages.get(stage, "fp32") == "bf16" else None

    def name(self, stage: str) -> str:
        return self.stages.get(stage, "fp32")

    def describe(self) -> str:
        """One line: the request, the device, each stage's choice (with its measured speed-up)."""
        parts = []
        for stage in STAGES:
            if stage in self.stages:
                x = f" {self.speedups[stage]:.2f}x" if stage in self.speedups else ""
                parts.append(f"{stage} {self.stages[stage]}{x}")
        return f"precision {self.requested} on {self.device}: {', '.join(parts)} ({self.reason})"

    def to_dict(self) -> dict:
        import torch

        out = {"requested": self.requested, "device": self.device, "stages": dict(self.stages), "reason": self.reason}
        if self.speedups:
            out["bf16_speedup"] = {k: round(v, 3) for k, v in self.speedups.items()}
        if self.device == "cpu":
            out["cpu"] = {"model": cpu_model(), "capability": cpu_capability(), "threads": torch.get_num_threads()}
        return out


def resolve_precision(
    requested: str = "auto", device: str | torch.device = "cpu", stages: tuple[str, ...] = STAGES
) -> PrecisionPlan:
    """The :class:`PrecisionPlan` for ``stages`` on ``device`` (the one place this is decided)."""
    import torch

    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage {unknown[0]!r}; one of {', '.join(STAGES)}")
    dev = torch.device(device)
    notes: list[str] = []
    if requested != "auto":
        reason = f"forced by --precision {requested}"
        if requested == "bf16" and dev.type == "cpu":
            native, why = native_bf16_cpu()
            if not native:
                notes.append(f"bf16 on this CPU is slow: {why}; --precision auto would use fp32")
        return PrecisionPlan(requested, dev.type, {s: requested for s in stages}, reason, notes=tuple(notes))
    if dev.type == "cuda":
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        choice = "bf16" if ok else "fp32"
        return PrecisionPlan("auto", "cuda", {s: choice for s in stages}, "GPU bf16" if ok else "GPU without bf16")
    if dev.type != "cpu":
        return PrecisionPlan("auto", dev.type, {s: "fp32" for s in stages}, f"{dev.type}: fp32")
    native, why = native_bf16_cpu()
    if not native:
        return PrecisionPlan("auto", "cpu", {s: "fp32" for s in stages}, why)
    table, table_why = capability_table()
    checks = {s: kernel_check(STAGE_KERNELS[s]) for s in stages}
    chosen = {s: decide(checks[s], table) for s in stages}
    unstable = sorted({c.kind for c in checks.values() if not c.stable})
    reason = f"{why}; bf16 where a measured kernel ran >= {SPEEDUP:g}x faster"
    if unstable:
        reason += f"; {', '.join(unstable)} check unstable, so {table_why}"
    return PrecisionPlan("auto", "cpu", chosen, reason, {s: c.ratio for s, c in checks.items()})
