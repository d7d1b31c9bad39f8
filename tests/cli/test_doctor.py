"""`soundvcm doctor`: what a bug report pastes (versions, CPU, threads, heap, precision plan, stage
timings of the shipped model) and the hints it gives where a setting is slow."""

from __future__ import annotations

import json

import pytest
import torch

from soundvcm.cli import main
from soundvcm.doctor import diagnose, physical_cores, render
from soundvcm.precision import cpu_capability, native_bf16_cpu


def test_doctor_without_bench_reports_the_machine(tmp_path, capsys):
    out = tmp_path / "doctor.json"
    assert main(["doctor", "--no-bench", "--device", "cpu", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["stages"] == []
    text = "\n".join(report["lines"])
    assert text in printed
    assert f"torch {torch.__version__}" in text
    assert f"PyTorch kernels {cpu_capability()}" in text
    assert f"{physical_cores()} physical" in text and f"{torch.get_num_threads()} intra-op" in text
    assert "heap: " in text
    assert "precision auto on cpu" in text


def test_doctor_hints_at_more_threads_than_cores(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: physical_cores() + 2)
    report = diagnose(None, "cpu")
    assert any(f"OMP_NUM_THREADS={physical_cores()}" in hint for hint in report.hints)
    assert f"try OMP_NUM_THREADS={physical_cores()}" in render(report)


@pytest.mark.slow
def test_doctor_times_each_stage_of_the_shipped_model(tmp_path):
    out = tmp_path / "doctor.json"
    assert main(["doctor", "--bench", "--device", "cpu", "--repeats", "2", "--json", str(out)]) == 0
    stages = json.loads(out.read_text())["stages"]
    assert [s["stage"] for s in stages] == ["visual", "text", "network", "vocoder"]
    native = native_bf16_cpu()[0]
    for s in stages:
        assert s["fp32_s"] > 0
        assert ("bf16_s" in s) == native  # bf16 is timed only where the CPU computes it natively
        assert s["auto"] in ("fp32", "bf16") and s["auto_vs_best"] >= 1.0
        if not native:
            assert s["auto"] == "fp32"
