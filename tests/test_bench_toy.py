"""The toy benchmark: the --quick CLI run, its JSON schema and plot, and seeded reproducibility."""

import json
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from soundvcm.bench.toy import QUICK, SAMPLER_SETTINGS, ToyBenchConfig, config_from_json, run_toy_bench, write_json
from soundvcm.cli import main

KEYS = {
    "sw2": set(SAMPLER_SETTINGS),
    "avg_velocity_mse": {"vcm", "meanflow"},
    "step_time_s": {"fm", "vcm", "meanflow"},
    "peak_mem_mb": {"fm", "vcm", "meanflow"},
}


def test_quick_cli_run(tmp_path):
    out_json = tmp_path / "toy.json"
    start = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "soundvcm.cli",
            "bench",
            "toy",
            "--quick",
            "--json",
            str(out_json),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| vcm@1 | 1 |" in proc.stdout and "| fm@50 | 25x2 |" in proc.stdout
    data = json.loads(out_json.read_text())
    for key, members in KEYS.items():
        assert members <= set(data[key]), key
    assert all(v >= 0 for v in data["sw2"].values()) and data["sw2_floor"] > 0
    assert all(v > 0 for v in data["step_time_s"].values())
    png = tmp_path / "toy_d2_samples.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert elapsed < 120, elapsed  # the goal is < 60 s on an idle 2-core machine


def _tiny(tmp_path=None) -> ToyBenchConfig:
    cfg = replace(ToyBenchConfig(), **QUICK)
    return replace(
        cfg,
        width=32,
        depth=2,
        batch_size=64,
        eval_per_class=50,
        mse_points=40,
        ode_steps=32,
        calibration_steps=2,
        steps=(("fm", 15), ("vcm", 10), ("meanflow", 8)),
    )


def test_fixed_steps_are_bit_reproducible_and_replayable(tmp_path):
    cfg = _tiny()
    first = run_toy_bench(cfg)
    second = run_toy_bench(cfg)
    assert first["sw2"] == second["sw2"] and first["avg_velocity_mse"] == second["avg_velocity_mse"]
    assert first["train_steps"] == {"fm": 15, "vcm": 10, "meanflow": 8}
    other = run_toy_bench(replace(cfg, seed=1))
    assert other["sw2"] != first["sw2"]
    path = tmp_path / "r.json"
    write_json(path, first)
    assert config_from_json(path) == replace(cfg, steps=tuple(sorted(cfg.steps)))


def test_cli_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "toy", "--budget", "-3"])
    assert exc.value.code == 2
    assert "must be > 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["bench", "nope"])
    assert exc.value.code == 2


def test_replay_of_a_bad_file_fails_clearly(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["bench", "toy", "--replay", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "not a toy-benchmark JSON result" in err and "Traceback" not in err
