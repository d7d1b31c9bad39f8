"""The toy benchmark: the --quick CLI run and its JSON, equal-cost step plans, reproducibility across
runs and worker counts, --replay, and clear errors."""

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from soundvcm.bench.toy import (
    MAIN_VARIANTS,
    QUICK,
    ToyBenchConfig,
    Variant,
    config_from_json,
    plan_steps,
    run_toy_bench,
    write_json,
)
from soundvcm.cli import main


def test_quick_cli_run(tmp_path):
    out_json = tmp_path / "toy.json"
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
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| vcm@1 | 1 |" in proc.stdout and "| fm@50 | 25x2 |" in proc.stdout
    assert "| 1-step VCM < MeanFlow |" in proc.stdout  # the goals table
    data = json.loads(out_json.read_text())
    labels = [v.label for v in MAIN_VARIANTS]
    assert set(data["steps"]) == set(labels) == set(data["costs"])
    assert {f"{label}@1" for label in labels if label != "fm"} <= set(data["summary"]["sw2"])
    assert data["steps"]["vcm"] == QUICK["vcm_steps"]
    # equal cost: the cheaper flow-matching step gets more steps, the JVP step of MeanFlow fewer
    assert data["steps"]["fm"] > data["steps"]["vcm"] > data["steps"]["meanflow"]
    png = tmp_path / "toy_d2_samples.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _tiny(**kw) -> ToyBenchConfig:
    cfg = replace(ToyBenchConfig(), **QUICK)
    steps = (("fm", 15), ("vcm", 10), ("vcm_split_p", 10), ("meanflow", 6), ("meanflow_split_p", 6))
    cfg = replace(cfg, width=16, depth=1, batch_size=32, eval_per_class=40, mse_points=30, ode_steps=16,
                  calibration_steps=1, seeds=(0, 1), workers=1, steps=steps)  # fmt: skip
    return replace(cfg, **kw)


def test_results_do_not_depend_on_reruns_or_workers_and_replay(tmp_path):
    variants = MAIN_VARIANTS[:3]
    first = run_toy_bench(_tiny(), variants=variants)
    second = run_toy_bench(_tiny(workers=2), variants=variants)
    assert first["summary"]["sw2"] == second["summary"]["sw2"]
    assert first["summary"]["avg_velocity_mse"] == second["summary"]["avg_velocity_mse"]
    assert first["steps"] == {"fm": 15, "vcm": 10, "vcm_split_p": 10}
    by_seed = {r["seed"]: r["sw2"]["vcm@1"] for r in first["jobs"] if r["label"] == "vcm"}
    assert by_seed[0] != by_seed[1]  # seeds are different mixtures
    stats = first["summary"]["sw2"]["vcm@1"]
    assert stats["values"] == [by_seed[0], by_seed[1]] and stats["std"] > 0
    path = tmp_path / "r.json"
    write_json(path, first)
    cfg, ablation = config_from_json(path)
    assert not ablation and cfg == replace(_tiny(), steps=tuple(sorted(first["steps"].items())))


def test_equal_cost_plan_follows_measured_step_costs():
    cfg = _tiny(steps=(), vcm_steps=100, calibration_steps=3)
    steps, costs = plan_steps(cfg, (Variant("vcm", "vcm"), Variant("fm", "fm"), Variant("meanflow", "meanflow")))
    assert steps["vcm"] == 100
    for label in ("fm", "meanflow"):  # steps x cost equals VCM's budget, up to rounding to 10 steps
        spent = steps[label] * costs[label]["cpu_ms_per_step"]
        assert abs(spent - 100 * costs["vcm"]["cpu_ms_per_step"]) <= 5 * costs[label]["cpu_ms_per_step"]


def test_variant_changes_reach_the_objective_config():
    cfg = ToyBenchConfig()
    changed = cfg.objective_config(
        Variant("x", "vcm", (("time.equal_ratio", 0.0), ("guidance.mix", 0.75), ("adaptive_p_equal", 0.0)))
    )
    assert (changed.time.equal_ratio, changed.guidance.mix, changed.adaptive_p_equal) == (0.0, 0.75, 0.0)
    assert changed.guidance.scale == cfg.guidance_scale and changed.adaptive_p == 1.0


def test_cli_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "toy", "--seeds", "0"])
    assert exc.value.code == 2 and "must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["bench", "nope"])
    assert exc.value.code == 2


def test_replay_of_a_bad_file_fails_clearly(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["bench", "toy", "--replay", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "not a toy-benchmark JSON result" in err and "Traceback" not in err


def test_a_guidance_variant_is_scored_against_its_own_exact_target():
    from soundvcm.bench.toy import evaluation_set, run_job

    cfg = _tiny(seeds=(0,))
    w2 = run_job(cfg, Variant("w=2", "vcm", (("guidance.scale", 2.0),)), 0, 5)
    assert w2["floor"] == evaluation_set(replace(cfg, guidance_scale=2.0), 0)["floor"]
    assert w2["floor"] != evaluation_set(cfg, 0)["floor"]


def test_finetune_from_flow_matching_starts_where_fm_left_off(tmp_path):
    from soundvcm.bench.toy_finetune import FinetuneConfig, run_finetune

    cfg = _tiny(seeds=(0,), width=32)
    result = run_finetune(cfg, FinetuneConfig(fm_steps=300, vcm_steps=20, every=10), out=tmp_path)
    r = result["results"][0]
    assert [s for s, _ in r["scratch"]] == [s for s, _ in r["finetuned"]] == [10, 20]
    # 20 VCM steps from scratch are far from the target; from a trained FM network they are not
    assert r["finetuned"][0][1] < r["scratch"][0][1]
    assert r["scratch_final"] == r["scratch"][-1][1] and (r["reach_step"] is None or r["reach_step"] <= 20)
    assert "| seed | scratch final SW2@1 |" in result["table"]
    assert (tmp_path / "toy_d2_finetune.png").read_bytes()[:4] == b"\x89PNG"
