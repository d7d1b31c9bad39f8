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
    STABLE_SPREAD,
    STAGE_KERNELS,
    cpu_capability,
    cpu_model,
    kernel_check,
    native_bf16_cpu,
    resolve_precision,
    summarize,
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


def _plan(report: Report, device: torch.device, plan) -> None:
    report.add(plan.describe())
    if device.type == "cpu" and native_bf16_cpu()[0]:
        checks = [kernel_check(k) for k in sorted(set(STAGE_KERNELS.values()))]
        ratios = ", ".join(f"{c.kind} {c.ratio:.2f}x ({'stable' if c.stable else 'unstable'})" for c in checks)
        report.add(f"bf16 speed-up of the check kernels (median fp32/bf16 time of interleaved rounds): {ratios}")


def _interleaved(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each precision, in rounds that alternate which goes first (after a
    warm-up of each), so load that comes and goes falls on both sides of every round."""
    for fn in calls.values():
        fn()
    times: dict[str, list[float]] = {p: [] for p in calls}
    for r in range(repeats):
        for p in list(calls) if r % 2 == 0 else list(calls)[::-1]:
            start = time.perf_counter()
            calls[p]()
            times[p].append(time.perf_counter() - start)
    return times


def _stage_calls(pipe) -> dict[str, tuple[str, Callable[[], object]]]:
    """One small, real call per stage of ``pipe`` (a few hundred ms each in fp32 on 2 cores)."""
    enc, net = pipe.encoders, pipe.net
    frames = torch.randint(
        0, 256, (1, 8, 3, pipe.spec.clip_frames.height, pipe.spec.clip_frames.width), dtype=torch.uint8
    )
    seq = net.sequence
    prepared = net.prepare({k: v.to(pipe.device) for k, v in net.null_conditions(1).items()})
    x = torch.randn(1, seq.latent_seq_len, net.config.latent_dim, device=pipe.device)
    t = torch.ones(1, device=pipe.device)
    mel_frames = pipe.sample_rate // pipe.spec.sequence.hop_length  # 1 s of audio
    mel = torch.randn(1, pipe.spec.n_mels, mel_frames) * 2 - 5

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


def _stages(report: Report, model: str, device: torch.device, repeats: int, auto) -> None:
    from soundvcm.pipeline import Pipeline

    native = device.type != "cpu" or native_bf16_cpu()[0]
    pipes = {
        p: Pipeline.load(model, device=str(device), precision=p) for p in (("fp32", "bf16") if native else ("fp32",))
    }
    calls = {p: _stage_calls(pipe) for p, pipe in pipes.items()}
    report.add("")
    report.add(f"| stage ({model}) | input | fp32 s | bf16 s | auto | auto vs best | rounds agree |")
    report.add("|---|---|---:|---:|---|---:|---|")
    for stage in ("visual", "text", "network", "vocoder"):
        what = calls["fp32"][stage][0]
        times = _interleaved({p: calls[p][stage][1] for p in calls}, repeats)
        median = {p: sorted(v)[len(v) // 2] for p, v in times.items()}
        chosen = auto.name(stage)
        other = "fp32" if chosen == "bf16" else "bf16"
        if other in times:  # per-round ratios of auto's choice to the other: the verdict needs them to agree
            check = summarize(stage, [a / b for a, b in zip(times[chosen], times[other])])
            ratio, stable = max(1.0, check.ratio), check.stable
        else:
            ratio, stable = 1.0, True
        bf16 = f"{median['bf16']:.3f}" if "bf16" in median else "not run (no native bf16)"
        agree = "yes" if stable else f"no (spread > {STABLE_SPREAD:g}x: a busy machine)"
        report.add(f"| {stage} | {what} | {median['fp32']:.3f} | {bf16} | {chosen} | {ratio:.2f}x | {agree} |")
        report.stages.append(
            {
                "stage": stage,
                "input": what,
                **{f"{p}_s": v for p, v in median.items()},
                "auto": chosen,
                "auto_vs_best": ratio,
                "stable": stable,
            }
        )
        if ratio > SLOW and stable:
            report.hints.append(
                f"{stage}: auto chose {chosen}, {ratio:.2f}x slower than {other} here: pass "
                f"--precision {other} (and please report this output)"
            )
        elif not stable:
            report.hints.append(f"{stage}: the timings scattered (other work running?); rerun doctor when idle")


def diagnose(model: str | None = "default", device: str = "auto", repeats: int = 5, remeasure: bool = False) -> Report:
    """The whole report (``model=None``: no stage benchmark); ``remeasure``: drop the remembered kernel
    checks first, so the plan printed is measured now."""
    from soundvcm.device import select_device
    from soundvcm.precision import forget_checks

    if remeasure:
        forget_checks()
    report = Report()
    dev = select_device(device)
    _versions(report)
    _cpu(report)
    plan = resolve_precision("auto", dev)  # once: what the report prints is what the stages are held to
    _plan(report, dev, plan)
    if model is not None:
        try:
            _stages(report, model, dev, repeats, plan)
        except (ValueError, OSError) as exc:
            report.hints.append(f"the stage benchmark could not load {model!r}: {exc}")
    return report


def render(report: Report) -> str:
    hints = report.hints or ["none: every stage runs in its faster precision"]
    return "\n".join(report.lines + ["", "hints:"] + [f"- {h}" for h in hints])
