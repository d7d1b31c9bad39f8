"""``soundvcm doctor``: what this machine is, what soundvcm will run on it, and how fast.

What a bug report should paste (as ``transformers env`` and ``diffusers env`` print):

* versions: soundvcm, Python, the platform, torch (CPU or CUDA build), the GPU if any;
* the CPU: model, PyTorch's kernel level (``AVX2``, ``AVX512``, ...), native bf16 or not (and
  why), logical and physical cores, torch's intra-/inter-op threads;
* the precision plan ``auto`` makes for each stage (:mod:`soundvcm.precision`), with the
  measured kernel speed-ups it was based on;
* a micro-benchmark of each real stage of the shipped model (visual encoder, text encoder,
  network, vocoder) in fp32 and in bf16 (bf16 only where the CPU computes it natively: elsewhere
  it is 40-90x slower and the kernel check shows by how much), with auto's choice against the
  faster of the two;
* hints wherever a choice is slow: auto more than 1.2x slower than the best, more threads than
  cores, a CUDA build of torch with no GPU, or the lite weights missing.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from soundvcm import __version__
from soundvcm.allocator import REFUSED, tune_malloc
from soundvcm.precision import (
    STAGE_KERNELS,
    cpu_capability,
    cpu_model,
    measured_speedup,
    native_bf16_cpu,
    resolve_precision,
)

SLOW = 1.2  # auto may be at most this much slower than the faster precision


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)
    stages: list[dict] = field(default_factory=list)

    def add(self, text: str = "") -> None:
        self.lines.append(text)


def physical_cores() -> int:
    """Distinct (physical id, core id) pairs of /proc/cpuinfo; the logical count where unknown."""
    try:
        cores, phys = set(), "0"
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "physical id":
                    phys = value.strip()
                elif key.strip() == "core id":
                    cores.add((phys, value.strip()))
        if cores:
            return len(cores)
    except OSError:
        pass
    return os.cpu_count() or 1


def _versions(report: Report) -> None:
    cuda = torch.version.cuda
    report.add(f"soundvcm {__version__}, Python {platform.python_version()}, {platform.platform()}")
    report.add(f"torch {torch.__version__} ({'CUDA ' + cuda + ' build' if cuda else 'CPU build'})")
    if torch.cuda.is_available():
        report.add(f"GPU: {torch.cuda.get_device_name(0)} (bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'})")
    elif cuda:
        report.hints.append(
            "this torch is a CUDA build but no GPU is visible: on a CPU-only machine the CPU build "
            "(`make install`, TORCH=cpu) is ~3 GB smaller"
        )


def _cpu(report: Report) -> None:
    native, why = native_bf16_cpu()
    logical, physical = os.cpu_count() or 1, physical_cores()
    threads, inter = torch.get_num_threads(), torch.get_num_interop_threads()
    report.add(
        f"CPU: {cpu_model()}, PyTorch kernels {cpu_capability()}, native bf16: {'yes' if native else 'no'} ({why})"
    )
    report.add(f"cores: {physical} physical, {logical} logical; torch threads: {threads} intra-op, {inter} inter-op")
    heap = tune_malloc()
    report.add(f"heap: {heap}")
    if heap.endswith(REFUSED):
        report.hints.append("glibc's malloc kept its defaults: each pass re-faults its activations' pages")
    if threads > physical:
        report.hints.append(
            f"{threads} intra-op threads on {physical} physical cores: SMT siblings slow convolutions down; "
            f"try OMP_NUM_THREADS={physical}"
        )
    elif threads < physical:
        report.hints.append(f"only {threads} of {physical} cores are used (OMP_NUM_THREADS / torch.set_num_threads?)")


def _plan(report: Report, device: torch.device) -> None:
    plan = resolve_precision("auto", device)
    report.add(plan.describe())
    if device.type == "cpu":
        kinds = sorted(set(STAGE_KERNELS.values()))
        ratios = ", ".join(f"{k} {measured_speedup(k):.2f}x" for k in kinds)
        report.add(f"bf16 speed-up of the check kernels (fp32 time / bf16 time, one thread): {ratios}")


def _best_of(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _stage_calls(pipe) -> dict[str, tuple[str, Callable[[], object]]]:
    """One small, real call per stage of ``pipe`` (a few hundred ms each in fp32 on 2 cores)."""
    enc, net = pipe.encoders, pipe.net
    frames = torch.randint(
        0, 256, (1, 8, 3, pipe.spec.clip_frames.height, pipe.spec.clip_frames.width), dtype=torch.uint8
    )
    net.set_duration(float(net.config.sequence.duration))
    seq = net.sequence
    prepared = net.prepare({k: v.to(pipe.device) for k, v in net.null_conditions(1).items()})
    x = torch.randn(1, seq.latent_seq_len, net.config.latent_dim, device=pipe.device)
    t = torch.ones(1, device=pipe.device)
    mel_frames = pipe.sample_rate // pipe.spec.sequence.hop_length  # 1 s of audio
    mel = torch.randn(1, 80 if pipe.encoder_set.startswith("lite") else enc.mel.n_mels, mel_frames) * 2 - 5

    def network() -> object:
        from soundvcm.network.protocol import autocast

        with torch.inference_mode():
            return autocast(net, pipe.dtype)(x, t, 0 * t, prepared)

    return {
        "visual": ("8 frames", lambda: enc.encode_clip(frames)),
        "text": ("1 prompt", lambda: enc.encode_text(["a dog barks twice"])),
        "network": (f"1 NFE, {seq.duration:g} s", network),
        "vocoder": ("1 s of audio", lambda: enc.vocode(mel)),
    }


def _stages(report: Report, model: str, device: torch.device, repeats: int) -> None:
    from soundvcm.pipeline import Pipeline

    auto = resolve_precision("auto", device)
    native = device.type != "cpu" or native_bf16_cpu()[0]
    pipes = {
        p: Pipeline.load(model, device=str(device), precision=p) for p in (("fp32", "bf16") if native else ("fp32",))
    }
    calls = {p: _stage_calls(pipe) for p, pipe in pipes.items()}
    report.add("")
    report.add(f"| stage ({model}) | input | fp32 s | bf16 s | auto | auto vs best |")
    report.add("|---|---|---:|---:|---|---:|")
    for stage in ("visual", "text", "network", "vocoder"):
        what = calls["fp32"][stage][0]
        times = {p: _best_of(calls[p][stage][1], repeats) for p in calls}
        chosen = auto.name(stage)
        best = min(times.values())
        ratio = times.get(chosen, float("nan")) / best
        bf16 = f"{times['bf16']:.3f}" if "bf16" in times else "not run (no native bf16)"
        report.add(f"| {stage} | {what} | {times['fp32']:.3f} | {bf16} | {chosen} | {ratio:.2f}x |")
        report.stages.append(
            {
                "stage": stage,
                "input": what,
                **{f"{p}_s": v for p, v in times.items()},
                "auto": chosen,
                "auto_vs_best": ratio,
            }
        )
        if ratio > SLOW:
            other = "fp32" if chosen == "bf16" else "bf16"
            report.hints.append(
                f"{stage}: auto chose {chosen}, {ratio:.2f}x slower than {other} here: pass "
                f"--precision {other} (and please report this output)"
            )


def diagnose(model: str | None = "default", device: str = "auto", repeats: int = 3) -> Report:
    """The whole report (``model=None``: no stage benchmark)."""
    from soundvcm.device import select_device

    report = Report()
    dev = select_device(device)
    _versions(report)
    _cpu(report)
    _plan(report, dev)
    if model is not None:
        try:
            _stages(report, model, dev, repeats)
        except (ValueError, OSError) as exc:
            report.hints.append(f"the stage benchmark could not load {model!r}: {exc}")
    return report


def render(report: Report) -> str:
    hints = report.hints or ["none: every stage runs in its faster precision"]
    return "\n".join(report.lines + ["", "hints:"] + [f"- {h}" for h in hints])
