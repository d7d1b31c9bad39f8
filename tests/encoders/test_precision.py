"""Precision by capability (issue 22): the one policy, what it records, and the status line.

The policy is tested on this machine as it is and with its CPU made to look like another kind
(flags, PyTorch's kernel level, oneDNN's cap), so that both branches run on every CI machine."""

from __future__ import annotations

import io
import json

import pytest
import torch

from soundvcm import precision
from soundvcm.console import StageStatus
from soundvcm.device import StageTimer
from soundvcm.precision import STAGES, PrecisionPlan, resolve_precision


@pytest.fixture
def cpu_kind(monkeypatch):
    """Make the CPU look like ``flags`` with PyTorch at ``capability`` (and oneDNN capped at ``isa``)."""

    def set_kind(flags: set[str], capability: str = "AVX512", isa: str | None = None, machine: str = "x86_64"):
        monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
        monkeypatch.setattr(precision, "cpu_capability", lambda: capability)
        monkeypatch.setattr(precision.platform, "machine", lambda: machine)
        if isa is None:
            monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
        else:
            monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)

    return set_kind


def test_a_cpu_without_native_bf16_runs_every_stage_in_fp32_without_measuring(cpu_kind, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("no bf16 timing on a CPU that emulates it")

    monkeypatch.setattr(precision, "kernel_check", never)
    for flags, capability, isa in [({"avx2", "fma"}, "AVX2", None),  # AVX2 only (issue 22's EPYC)
                                   ({"avx512_bf16"}, "AVX2", None),  # ATEN_CPU_CAPABILITY=avx2
                                   ({"avx512_bf16"}, "AVX512", "AVX2")]:  # oneDNN capped  # fmt: skip
        cpu_kind(flags, capability, isa)
        plan = resolve_precision("auto", "cpu")
        assert set(plan.stages) == set(STAGES) and set(plan.stages.values()) == {"fp32"}, plan
        assert all(plan.dtype(s) is None for s in STAGES)
        assert "emulated" in plan.reason or "caps oneDNN" in plan.reason, plan.reason
    cpu_kind({"asimd"}, "DEFAULT", machine="aarch64")
    assert set(resolve_precision("auto", "cpu").stages.values()) == {"fp32"}


def _checks(monkeypatch, ratios: dict[str, list[float]]) -> None:
    """Inject per-round timings ratios for each kernel kind, as a check would have measured them."""
    monkeypatch.setattr(precision, "kernel_check", lambda kind: precision.summarize(kind, ratios[kind]))


def test_native_bf16_is_used_only_where_the_measured_kernel_is_faster(cpu_kind, monkeypatch):
    cpu_kind({"avx512f", "avx512_bf16"})
    steady = {"matmul": [2.0] * 9, "conv1d": [1.05] * 9, "conv2d": [0.5] * 9}  # conv1d below the 1.1x margin
    _checks(monkeypatch, steady)
    plan = resolve_precision("auto", "cpu")
    assert plan.stages == {"visual": "fp32", "text": "bf16", "vocoder": "fp32", "network": "bf16", "train": "bf16"}
    assert plan.dtype("network") is torch.bfloat16 and plan.dtype("vocoder") is None
    assert plan.speedups["visual"] == 0.5 and "native bf16" in plan.reason and "unstable" not in plan.reason
    cpu_kind({"bf16", "asimd"}, "DEFAULT", machine="aarch64")  # an Arm core with the bf16 feature
    assert resolve_precision("auto", "cpu").stages["network"] == "bf16"


NOISY = [0.54, 9.05, 1.8, 0.9, 18.1, 1.2, 3.0, 0.7, 10.7]  # issue 35's busy readings, round by round
SWAPPED = [1.85, 1.85, 0.5, 1.85, 0.5, 1.85, 0.5, 1.85, 0.5]  # a second job starting half-way


@pytest.mark.parametrize(
    "flags, ratios, expected",
    [
        ({"avx512_bf16"}, NOISY, "bf16"),  # Zen 4: unstable -> the table: bf16
        ({"avx512_bf16", "amx_bf16"}, NOISY, "bf16"),  # AMX: the table says bf16
        ({"avx512_bf16"}, SWAPPED, "bf16"),  # rounds disagree -> the table
        ({"avx512_bf16"}, [1.0] * 9, "fp32"),  # stable and equal: no gain, fp32
        ({"avx512_bf16"}, [1.85 * (1 + 0.05 * (-1) ** i) for i in range(9)], "bf16"),  # stable, +-5 %
        ({"avx512_bf16"}, [0.6 * (1 + 0.1 * (-1) ** i) for i in range(9)], "fp32"),  # stable and slower
    ],
)
def test_a_busy_moment_cannot_fool_auto(cpu_kind, monkeypatch, flags, ratios, expected):
    cpu_kind(flags | {"avx512f"})
    _checks(monkeypatch, {k: ratios for k in ("matmul", "conv1d", "conv2d")})
    plan = resolve_precision("auto", "cpu")
    assert set(plan.stages.values()) == {expected}, plan
    check = precision.summarize("conv2d", ratios)
    assert check.stable == (max(ratios) / min(ratios) < 1.5)
    assert ("capability table" in plan.reason) == (not check.stable)


def test_the_median_of_rounds_is_robust_to_bursts():
    bursts = [1.8, 1.8, 0.3, 1.8, 1.8, 1.8, 12.0, 1.8, 1.8]  # two rounds hit by other work
    check = precision.summarize("matmul", bursts)
    assert check.ratio == pytest.approx(1.8) and check.stable and check.rounds == 9


def test_forced_precisions_and_what_the_plan_records(cpu_kind):
    cpu_kind({"avx2"}, "AVX2")
    forced = resolve_precision("bf16", "cpu", ("visual", "text"))
    assert forced.stages == {"visual": "bf16", "text": "bf16"} and "slow" in forced.notes[0]
    assert "--precision auto would use fp32" in forced.notes[0]
    assert resolve_precision("fp32", "cpu").notes == ()
    doc = json.loads(json.dumps(forced.to_dict()))  # what caches, checkpoints and bench JSON hold
    assert doc["requested"] == "bf16" and doc["stages"]["visual"] == "bf16" and doc["cpu"]["capability"] == "AVX2"
    assert "threads" in doc["cpu"] and "model" in doc["cpu"]
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp16")
    with pytest.raises(ValueError, match="unknown stage"):
        resolve_precision("auto", "cpu", ("decoder",))
    with pytest.raises(ValueError, match="unknown stage"):
        PrecisionPlan("auto", "cpu").dtype("decoder")


def test_the_real_check_on_this_machine_is_short_and_restores_threads():
    before = torch.get_num_threads()
    ratios = precision.measure_ratios("matmul", rounds=3)  # the measurement itself, not the remembered one
    assert len(ratios) == 3 and all(r > 0 for r in ratios) and torch.get_num_threads() == before
    plan = resolve_precision("auto", "cpu")  # whatever this CPU is: a complete, consistent plan
    native, _ = precision.native_bf16_cpu()
    assert set(plan.stages) == set(STAGES)
    assert native or set(plan.stages.values()) == {"fp32"}


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_stage_status_shows_on_a_terminal_and_stays_quiet_when_piped():
    tty, pipe = _Terminal(), io.StringIO()
    for stream in (tty, pipe):
        timer = StageTimer(torch.device("cpu"), StageStatus("generate clip", stream=stream, every=0.01))
        with timer("vocoder"):
            import time

            time.sleep(0.05)
        assert timer.times["vocoder"] >= 0.04
    shown = tty.getvalue()
    assert "generate clip: vocoder" in shown and " s" in shown and shown.endswith("\r")  # the line is cleared
    assert pipe.getvalue() == ""


def test_the_measured_answer_is_remembered_per_machine(cpu_kind, monkeypatch, tmp_path):
    """Every process on a machine makes the same choice: a stable check is kept on disk; an unstable
    one is measured again by the next processes (up to three tries), and doctor --remeasure forgets."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cpu_kind({"avx512f", "avx512_bf16"})
    calls = []
    readings = {"matmul": [1.5] * 9, "conv1d": [0.9] * 9, "conv2d": NOISY}

    def measure(kind, rounds=precision.ROUNDS):
        calls.append(kind)
        return readings[kind]

    monkeypatch.setattr(precision, "measure_ratios", measure)
    precision.kernel_check.cache_clear()
    first = resolve_precision("auto", "cpu")
    assert first.stages["vocoder"] == "fp32" and first.stages["network"] == "bf16" and first.stages["visual"] == "bf16"
    assert sorted(calls) == ["conv1d", "conv2d", "matmul"]
    for tries in (2, 3):  # new processes: the stable checks are reused, the unstable one measured again
        precision.kernel_check.cache_clear()
        assert resolve_precision("auto", "cpu").stages == first.stages
        assert calls.count("conv2d") == tries and calls.count("matmul") == 1
    precision.kernel_check.cache_clear()  # three tries spent: the table's answer stays, nothing measured
    resolve_precision("auto", "cpu")
    assert calls.count("conv2d") == 3
    readings["conv2d"] = [0.5] * 9  # an idle machine, once asked to measure again
    precision.forget_checks()
    assert resolve_precision("auto", "cpu").stages["visual"] == "fp32" and calls.count("matmul") == 2
    assert (tmp_path / "soundvcm" / "precision.json").is_file()
    precision.kernel_check.cache_clear()
