"""Nothing lost when a checkpoint goes bad (issue 34, item 1).

The sweep's case: a short run, 4 KB of 0xFF written into the middle of the latest checkpoint's
``state.safetensors`` (one tensor becomes NaN), then ``--resume``. Before: the run loaded it without
a word, skipped every step, saved the NaN again and rotated the intact checkpoint away. Now: the
checksum fails, resume names the broken checkpoint and continues from the newest intact one; NaN
weights are never saved; weights that load as NaN stop the run at once, naming tensor and file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from soundvcm.cli import main
from soundvcm.training.checkpoint import (
    CHECKSUMS,
    NonFiniteWeights,
    checkpoint_problem,
    latest_checkpoint,
    save_checkpoint,
)
from soundvcm.training.trainer import Trainer
from training_factory import synthetic_cache, tiny_config


@pytest.fixture(autouse=True)
def _tiny(tiny_encoder_set):
    """Every test here trains on training_factory's tiny caches."""


def _cli(argv: list, capsys) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def _errors(err: str) -> list[str]:
    return [ln for ln in re.split(r"[\r\n]", err) if ln.startswith("soundvcm: error:")]


def _train(data: Path, run: Path, steps: int, *extra: str) -> list:
    return ["train", "--preset", "tiny_cpu", "--data", data, "--out", run, "--steps", steps, "batch_size=4",
            "checkpoint_every=3", "keep_checkpoints=2", "val_every=0", "sample_every=0", "ema_snapshot_every=3",
            "--device", "cpu", "--precision", "fp32", *extra]  # fmt: skip


def _ckpts(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").glob("ckpt_*"))


def _poison(path: Path) -> None:
    """The sweep's damage: 4 KB of 0xFF in the middle of the file (a NaN tensor, same length)."""
    blob = bytearray(path.read_bytes())
    mid = len(blob) // 2
    blob[mid : mid + 4096] = b"\xff" * 4096
    path.write_bytes(bytes(blob))


def test_a_corrupted_checkpoint_is_skipped_and_the_intact_one_kept(tmp_path, capsys):
    data, run = synthetic_cache(tmp_path / "cache", rows=8), tmp_path / "run"
    assert _cli(_train(data, run, 12), capsys)[0] == 0
    assert _ckpts(run) == ["ckpt_000000009", "ckpt_000000012"]
    newest = run / "checkpoints" / "ckpt_000000012"
    _poison(newest / "state.safetensors")
    assert any(not torch.isfinite(t).all() for t in load_file(str(newest / "state.safetensors")).values())
    assert checkpoint_problem(newest) == "state.safetensors fails its checksum (the file changed after it was saved)"
    code, err = _cli(_train(data, run, 18, "--resume", "--allow-changes"), capsys)
    assert code == 0, err
    assert f"checkpoint {newest} is broken (state.safetensors fails its checksum" in err
    assert "using the newest intact one" in err and "ckpt_000000009" in err and "non-finite" not in err
    # it continued from step 9: 12, 15, 18 were saved again, all finite; nothing intact was lost
    assert _ckpts(run) == ["ckpt_000000015", "ckpt_000000018"]
    for name in _ckpts(run):
        assert checkpoint_problem(run / "checkpoints" / name) is None
        assert all(
            torch.isfinite(t).all() for t in load_file(str(run / "checkpoints" / name / "state.safetensors")).values()
        )


@pytest.mark.parametrize("damage", ["truncated", "empty", "json", "missing"])
def test_every_kind_of_broken_latest_falls_back(tmp_path, capsys, damage):
    data, run = synthetic_cache(tmp_path / "cache", rows=8), tmp_path / "run"
    assert _cli(_train(data, run, 6), capsys)[0] == 0
    newest = run / "checkpoints" / "ckpt_000000006"
    weights = newest / "state.safetensors"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "empty":
        weights.write_bytes(b"")
    elif damage == "json":
        (newest / "state.json").write_text("{ not json")
    else:
        weights.unlink()
    assert latest_checkpoint(run / "checkpoints") == run / "checkpoints" / "ckpt_000000003"
    assert f"checkpoint {newest} is broken" in capsys.readouterr().err


def test_no_intact_checkpoint_is_one_line(tmp_path, capsys):
    data, run = synthetic_cache(tmp_path / "cache", rows=8), tmp_path / "run"
    assert _cli(_train(data, run, 6), capsys)[0] == 0
    for name in _ckpts(run):
        _poison(run / "checkpoints" / name / "state.safetensors")
    code, err = _cli(_train(data, run, 9, "--resume"), capsys)
    assert code == 2 and len(_errors(err)) == 1 and "no intact checkpoint to resume from" in _errors(err)[0], err
    assert len(_ckpts(run)) == 2  # nothing deleted


def test_weights_that_load_as_nan_stop_the_run_at_once(tmp_path, capsys):
    """A NaN saved with a valid checksum (by an older version, say): one line naming tensor and file."""
    data, run = synthetic_cache(tmp_path / "cache", rows=8), tmp_path / "run"
    assert _cli(_train(data, run, 6), capsys)[0] == 0
    newest = run / "checkpoints" / "ckpt_000000006"
    tensors = load_file(str(newest / "state.safetensors"))
    name = next(k for k in sorted(tensors) if k.startswith("net.") and tensors[k].is_floating_point())
    tensors[name][..., 0] = float("nan")
    save_file(tensors, str(newest / "state.safetensors"))
    (newest / CHECKSUMS).unlink()  # as saved before checksums existed
    code, err = _cli(_train(data, run, 12, "--resume", "--allow-changes"), capsys)
    lines = _errors(err)
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert f"{newest}: {name} holds NaN or inf; this checkpoint cannot be resumed from" in lines[0]
    assert _ckpts(run) == ["ckpt_000000003", "ckpt_000000006"]  # no step taken, nothing saved or rotated


def test_non_finite_weights_are_never_saved(tmp_path):
    data = [str(synthetic_cache(tmp_path / "cache", rows=8))]
    trainer = Trainer(tiny_config(steps=3), data, tmp_path / "run")
    trainer.fit()
    root = tmp_path / "run" / "checkpoints"
    good = latest_checkpoint(root)
    with torch.no_grad():
        next(trainer.net.parameters()).fill_(float("inf"))
    trainer.step += 1
    with pytest.raises(
        NonFiniteWeights, match=f"holds NaN or inf, so no checkpoint was saved; the newest good one is {good}"
    ):
        trainer.checkpoint()
    assert latest_checkpoint(root) == good and sorted(p.name for p in root.iterdir()) == ["ckpt_000000003", "latest"]


def test_checksums_cover_what_was_written(tmp_path):
    path = save_checkpoint(tmp_path, 1, {"w": torch.ones(3)}, {"state": {}, "param_groups": []}, {}, {"x": 1})
    sums = json.loads((path / CHECKSUMS).read_text())
    assert set(sums) == {"state.safetensors", "state.json"} and checkpoint_problem(path) is None
    doc = json.loads((path / "state.json").read_text())
    (path / "state.json").write_text(json.dumps({**doc, "step": 2}))  # valid JSON, other content
    assert checkpoint_problem(path) == "state.json fails its checksum (the file changed after it was saved)"
