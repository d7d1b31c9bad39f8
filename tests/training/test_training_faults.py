"""Training faults (issue 10): Ctrl-C, full disks, kill -9, bad configs and caches; one line, nothing lost."""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from soundvcm.data.cache import CacheError, CacheMeta, FeatureCache
from soundvcm.data.mixing import MixedSource
from soundvcm.media.audio import write_audio
from soundvcm.training.checkpoint import latest_checkpoint
from soundvcm.training.config import train_config
from soundvcm.training.trainer import Trainer
from training_factory import DIMS, free_port, synthetic_cache, tiny_config, tiny_spec  # noqa: F401

_synthetic_cache = synthetic_cache
_config = tiny_config


@pytest.fixture(autouse=True)
def _test_encoder_set(tiny_encoder_set):
    """Register the tiny dimensions of training_factory as encoder set 'test' for every test here."""


# ----- training faults (issue 10) ----------------------------------------------------------
def _tiny_cli(data: str, run: Path, steps: int, *extra: str) -> list[str]:
    return ["train", "--preset", "tiny_cpu", "--data", data, "--out", str(run), "--steps", str(steps), "batch_size=4",
            "checkpoint_every=100", "ema_snapshot_every=1", "val_every=0", "sample_every=0", *extra]  # fmt: skip


def test_ctrl_c_saves_at_a_step_boundary_and_resume_matches(tmp_path, monkeypatch, capsys):
    """SIGINT arriving right after an optimizer update must not save a half-finished step."""
    import signal

    from soundvcm.cli import main

    data = str(_synthetic_cache(tmp_path / "a", rows=8))
    assert main(_tiny_cli(data, tmp_path / "full", 5)) == 0
    original = torch.optim.AdamW.step
    calls = {"n": 0}

    def step_then_interrupt(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:  # Ctrl-C lands between the update and the end of the step
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", step_then_interrupt)
    assert main(_tiny_cli(data, tmp_path / "part", 5)) == 130
    assert "interrupted at step 3" in capsys.readouterr().err
    assert latest_checkpoint(tmp_path / "part" / "checkpoints").name == "ckpt_000000003"
    monkeypatch.setattr(torch.optim.AdamW, "step", original)
    assert main(["train", "--out", str(tmp_path / "part"), "--data", data, "--resume"]) == 0
    full = load_file_state(tmp_path / "full")
    resumed = load_file_state(tmp_path / "part")
    assert full.keys() == resumed.keys() and all(torch.equal(full[k], resumed[k]) for k in full)


def load_file_state(run: Path) -> dict:
    from soundvcm.training.checkpoint import load_checkpoint

    net, _, _, _ = load_checkpoint(latest_checkpoint(run / "checkpoints"))
    return net


def test_resaving_a_step_never_leaves_latest_dangling(tmp_path, monkeypatch, capsys):
    import soundvcm.training.checkpoint as ckpt

    data = [str(_synthetic_cache(tmp_path / "a", rows=8))]
    trainer = Trainer(_config(), data, tmp_path / "run")
    trainer.fit(steps=3)  # checkpoint at step 3
    root = tmp_path / "run" / "checkpoints"
    good = latest_checkpoint(root)
    real_replace = os.replace

    def killed_while_publishing(src, dst):
        if Path(src).name.startswith(".ckpt_"):
            raise KeyboardInterrupt  # kill -9 between writing the new copy and publishing it
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", killed_while_publishing)
    with pytest.raises(KeyboardInterrupt):
        trainer.checkpoint()  # the same step again (what Ctrl-C right after a checkpoint does)
    assert latest_checkpoint(root) == good and (good / "state.safetensors").is_file()
    monkeypatch.setattr(ckpt.os, "replace", real_replace)
    again = trainer.checkpoint()  # a re-save gets a new name; the old copy goes only after the switch
    assert again.name == "ckpt_000000003_r1" and latest_checkpoint(root) == again and not good.exists()
    # a broken `latest` falls back to the newest intact checkpoint, and says so
    trainer.fit(steps=1)
    newest = latest_checkpoint(root)
    (newest / "state.safetensors").unlink()
    capsys.readouterr()
    resumed = Trainer(_config(), data, tmp_path / "run", resume=True)
    assert resumed.step == 3 and "using the newest intact one" in capsys.readouterr().err


CONFIG_ERRORS = {
    "objective": (["objective=foo"], "objective='foo' is not one of fm, meanflow, meanflow_split_p, vcm"),
    "network": (["network=foo"], "network='foo' is not one of"),
    "betas": (["betas=0.9"], "betas needs two values"),
    "lr": (["lr=fast"], "lr='fast': expected a number"),  # one parser for training and objective keys
    "lr_nan": (["lr=nan"], "lr='nan': expected a finite number"),
    "steps_type": (["warmup=1.5"], "warmup='1.5': expected a whole number"),
    "device": (["--device", "cuda"], "no CUDA GPU is available"),
}


@pytest.mark.parametrize("name", list(CONFIG_ERRORS))
def test_config_errors_are_one_line(name, tmp_path, capsys):
    from soundvcm.cli import main

    extra, message = CONFIG_ERRORS[name]
    if name == "device" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    data = str(_synthetic_cache(tmp_path / "a", rows=8))
    code = main(_tiny_cli(data, tmp_path / "run", 2, *extra))
    err = [ln for ln in re.split(r"[\r\n]", capsys.readouterr().err) if ln.strip() and not ln.startswith("config:")]
    assert code == 2 and len(err) == 1 and message in err[0] and "Traceback" not in err[0], err


def test_resume_keeps_the_run_identity(tmp_path, capsys):
    from soundvcm.cli import main

    data = str(_synthetic_cache(tmp_path / "a", rows=8))
    run = tmp_path / "run"
    assert main(_tiny_cli(data, run, 2)) == 0
    capsys.readouterr()
    code = main(["train", "--out", str(run), "--data", data, "--resume", "ema_sigma_rels=0.07", "--allow-changes"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1 and "keeps its ema_sigma_rels" in err[0]


def test_caches_with_other_encoder_weights_are_refused(tmp_path):
    a = _synthetic_cache(tmp_path / "a", rows=4)
    b = _synthetic_cache(tmp_path / "b", rows=4, seed=1)
    for root, md5 in ((a, "aaa"), (b, "bbb")):
        meta = CacheMeta.load(root)
        meta.weight_hashes = {"vocoder.pth": md5, "text.safetensors": "same"}
        meta.save(root)
    with pytest.raises(CacheError, match=r"different encoder weights \(vocoder.pth\).*--allow-mixed-encoders"):
        MixedSource.open([str(a), str(b)])
    assert len(MixedSource.open([str(a), str(b)], allow_mixed_encoders=True).caches) == 2


def test_nonfinite_cache_rows_are_refused_naming_the_row(tmp_path, capsys):
    from safetensors import safe_open
    from safetensors.torch import load_file

    from soundvcm.atomic import save_tensors
    from soundvcm.cli import main

    root = _synthetic_cache(tmp_path / "a", rows=8)
    path = root / "shard_00001.safetensors"
    shard = load_file(str(path))
    with safe_open(str(path), "pt") as h:
        meta = h.metadata()
    shard["mean"][2, 5, 1] = float("nan")
    save_tensors(path, shard, metadata=meta)
    cache = FeatureCache(root)
    assert all(torch.isfinite(cache.row(i)["mean"]).all() for i in (0, 1, 2, 3, 4, 5, 7))
    with pytest.raises(CacheError, match=r"shard_00001.safetensors: row 2 \(r6\) holds NaN/inf in mean"):
        cache.row(6)
    code = main(["train", "--preset", "tiny_cpu", "--data", str(root), "--out", str(tmp_path / "run"), "--steps",
                 "2", "batch_size=4", "latent_stats_rows=8", "sample_every=0", "val_every=0"])  # fmt: skip
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("soundvcm:")]
    assert code == 2 and len(err) == 1 and "holds NaN/inf in mean" in err[0]  # before the latent statistics


def test_ema_export_before_any_step_is_a_clear_error(tmp_path, capsys):
    from soundvcm.cli import main

    data = [str(_synthetic_cache(tmp_path / "a", rows=8))]
    trainer = Trainer(_config(), data, tmp_path / "run")
    trainer.checkpoint()  # step 0
    with pytest.raises(ValueError, match="no EMA updates yet"):
        trainer.export_ema()
    assert main(["ema", str(tmp_path / "run")]) == 2
    assert "has not trained a step yet" in capsys.readouterr().err


def test_extract_with_no_usable_row_fails(tmp_path, capsys):
    from soundvcm.cli import main

    write_audio(tmp_path / "silent.wav", np.zeros(16_000, np.float32), 16_000)
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    (tmp_path / "list.tsv").write_text("silent.wav\tnothing\nbad.wav\tbroken\n")
    code = main(["extract", "--input", str(tmp_path / "list.tsv"), "--out", str(tmp_path / "cache"), "--duration", "1"])
    assert code == 2 and "no usable row" in capsys.readouterr().err


def test_stale_temporaries_are_cleaned_and_modes_follow_the_umask(tmp_path):
    data = [str(_synthetic_cache(tmp_path / "a", rows=8))]
    run = tmp_path / "run"
    (run / "checkpoints" / ".ckpt_000000007.tmp").mkdir(parents=True)
    (run / "ema").mkdir(parents=True)
    (run / "ema" / ".ema_0.050_000000002.x1y2.safetensors.tmp.safetensors").write_bytes(b"half")
    old = os.umask(0o022)
    try:
        trainer = Trainer(_config(), data, run)
        trainer.fit(steps=3)
    finally:
        os.umask(old)
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    assert not [p for p in (run / "ema").iterdir() if p.name.startswith(".")]
    files = list((run / "checkpoints").rglob("*")) + list((run / "ema").iterdir())
    assert files and all((p.stat().st_mode & 0o777) in (0o644, 0o755) for p in files), {
        p.name: oct(p.stat().st_mode & 0o777) for p in files
    }


def test_ctrl_c_right_after_a_checkpoint_does_not_write_it_again(tmp_path, monkeypatch, capsys):
    import signal

    from soundvcm.cli import main

    data = str(_synthetic_cache(tmp_path / "a", rows=8))
    original = torch.optim.AdamW.step
    calls = {"n": 0}

    def step_then_interrupt(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", step_then_interrupt)
    assert main(_tiny_cli(data, tmp_path / "run", 5, "checkpoint_every=1")) == 130
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("ckpt_*"))
    assert names == ["ckpt_000000002", "ckpt_000000003"]  # step 3 saved once, by the periodic save


def test_curves_plot_the_runs_scalars(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from soundvcm.training.curves import plot_curves, read_scalars

    for name, scale in (("a", 1.0), ("b", 2.0)):
        with SummaryWriter(str(tmp_path / name / "tb")) as w:
            for step in range(0, 100, 10):
                w.add_scalar("train/loss", scale / (1 + step), step)
                w.add_scalar("val/val", scale / (2 + step), step)
    steps, values = read_scalars(tmp_path / "a")["train/loss"]
    assert steps == list(range(0, 100, 10)) and values[0] == pytest.approx(1.0)
    out = plot_curves({"vcm": tmp_path / "a", "fm": tmp_path / "b"}, tmp_path / "c.png")
    assert out.stat().st_size > 5000
    with pytest.raises(FileNotFoundError, match="no TensorBoard log"):
        read_scalars(tmp_path / "none")


# every Alg. 1 hyperparameter, reachable as a dotted override: key -> (value, how to read it back)
DOTTED = {
    "guidance.scale": ("3", lambda c: c.guidance.scale, 3.0),
    "guidance.mix": ("0.75", lambda c: c.guidance.mix, 0.75),
    "guidance.t_max": ("0.6", lambda c: c.guidance.t_max, 0.6),
    "guidance.dropout.row_prob": ("0.2", lambda c: c.guidance.dropout.row_prob, 0.2),
    "lambda_init": ("0.2", lambda c: c.lambda_init, 0.2),
    "lambda_end": ("0.001", lambda c: c.lambda_end, 0.001),
    "time.equal_ratio": ("0", lambda c: c.time.equal_ratio, 0.0),
    "time.mean": ("0.1", lambda c: c.time.mean, 0.1),
    "adaptive_p": ("0", lambda c: c.adaptive_p, 0.0),
    "adaptive_eps": ("0.1", lambda c: c.adaptive_eps, 0.1),
    "adaptive_p_equal": ("0.5", lambda c: c.adaptive_p_equal, 0.5),
}


@pytest.mark.parametrize("key", list(DOTTED))
def test_each_dotted_objective_override_reaches_the_objective(key, tmp_path, monkeypatch):
    from soundvcm.training import trainer as trainer_module

    value, read, expected = DOTTED[key]
    data = str(_synthetic_cache(tmp_path / "a", rows=8))
    seen = {}
    original = trainer_module.Trainer.fit

    def fit(self):
        seen["config"] = self.objective.config
        return original(self)

    monkeypatch.setattr(trainer_module.Trainer, "fit", fit)
    from soundvcm.cli import main

    args = ["train", "--preset", "tiny_cpu", "--data", data, "--out", str(tmp_path / "run"), "--steps", "2",
            "batch_size=4", "val_every=0", "sample_every=0", f"{key}={value}"]  # fmt: skip
    assert main(args) == 0
    assert read(seen["config"]) == pytest.approx(expected)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert [key, value] in saved["train"]["objective_overrides"]


def test_dotted_overrides_are_checked_and_fixed_on_resume():
    from soundvcm.training.config import resume_config

    with pytest.raises(ValueError, match="not a training key .* nor a key of objective 'vcm' .*guidance.scale"):
        train_config("paper", ["guidance.scael=3"])
    with pytest.raises(ValueError, match="guidance.scale='big': expected a number"):
        train_config("paper", ["guidance.scale=big"])
    with pytest.raises(ValueError, match="lambda_end"):
        train_config("paper", ["lambda_end=0.5"])  # above lambda_init: the dataclass's own check
    with pytest.raises(ValueError, match="objective 'fm'"):
        train_config("fm_baseline", ["guidance.scale=3"])  # flow matching has no training guidance
    cfg = train_config("paper", ["guidance.scale=3", "adaptive_p_equal=none"])
    assert cfg.objective_config.guidance.scale == 3.0 and cfg.objective_config.adaptive_p_equal is None
    # parsed once: configs derived from it keep the resolved objective config
    assert replace(cfg, steps=5).objective_config is cfg.objective_config
    with pytest.raises(ValueError, match="keeps its objective_overrides"):
        resume_config(cfg, None, ["guidance.scale=2"], allow_changes=True)


def test_init_starts_a_new_run_from_a_checkpoints_weights(tmp_path):
    from safetensors.torch import load_file

    from soundvcm.cli import main
    from soundvcm.training.trainer import Trainer

    data = str(_synthetic_cache(tmp_path / "a", rows=8))
    args = ["train", "--preset", "tiny_cpu", "--data", data, "--out", str(tmp_path / "fm"), "--steps", "2",
            "batch_size=4", "val_every=0", "sample_every=0", "objective=fm", "ema_snapshot_every=1"]  # fmt: skip
    assert main(args) == 0
    source = tmp_path / "fm" / "ema_sigma0p05"
    trainer = Trainer(_config(objective="vcm"), [data], tmp_path / "vcm", init=source)
    loaded = load_file(str(source.with_suffix(".safetensors")))
    for k, v in trainer.net.state_dict().items():  # latent statistics included
        assert torch.equal(v, loaded[k].to(v.dtype)), k
    trainer.fit()  # an FM checkpoint continues as a VCM
    bad = tmp_path / "bad"
    from soundvcm.network.checkpoint import save_network
    from soundvcm.network.mmdit import MMDiT, network_preset

    save_network(bad, MMDiT(network_preset("debug")), preset="debug", encoder_set="debug")
    with pytest.raises(ValueError, match="does not fit the .test. encoder set: .*latent_dim 8 .encoders: 4."):
        Trainer(_config(), [data], tmp_path / "x", init=bad)
