"""Feature caches, data mixing and the trainer: round trips, MMAudio's cache layout, exact
resume, robustness, and an end-to-end run
from media the tests make."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from media_factory import make_tone, make_video
from soundvcm.data.cache import CacheError, CacheMeta, FeatureCache
from soundvcm.data.extract import extract
from soundvcm.encoders.mmaudio_set import tiny_mmaudio_set
from soundvcm.media.audio import write_audio
from soundvcm.training.checkpoint import latest_checkpoint
from soundvcm.training.config import TRAIN_PRESETS, train_config
from soundvcm.training.trainer import Trainer, TrainingAborted
from training_factory import DIMS, free_port, synthetic_cache, tiny_config, tiny_spec  # noqa: F401

_synthetic_cache = synthetic_cache
_config = tiny_config


@pytest.fixture(autouse=True)
def _test_encoder_set(tiny_encoder_set):
    """Register the tiny dimensions of training_factory as encoder set 'test' for every test here."""


# ----- the trainer -------------------------------------------------------------------------
def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    data = [str(_synthetic_cache(tmp_path / "a", rows=12)), str(_synthetic_cache(tmp_path / "b", 6, False, 1))]
    full = Trainer(_config(), data, tmp_path / "full")
    full.fit()
    part = Trainer(_config(), data, tmp_path / "part")
    part.fit(steps=3)
    resumed = Trainer(_config(), data, tmp_path / "part", resume=True)
    assert resumed.step == 3
    resumed.fit()
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
    for k, v in full.net.state_dict().items():
        assert torch.equal(v, resumed.net.state_dict()[k]), k
    assert (tmp_path / "full" / "ema_sigma0p05.json").is_file()  # final EMA exported as a checkpoint
    with pytest.raises(ValueError, match="already holds a run"):
        Trainer(_config(), data, tmp_path / "full")


def test_nonfinite_losses_skip_then_abort(tmp_path, monkeypatch):
    data = [str(_synthetic_cache(tmp_path / "a", rows=8))]
    trainer = Trainer(_config(max_nonfinite=3), data, tmp_path / "run")
    original = trainer.objective.loss
    calls = {"n": 0}

    def flaky(net, batch, step, generator=None):
        out = original(net, batch, step, generator=generator)
        calls["n"] += 1
        if calls["n"] == 1 or calls["n"] >= 3:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(trainer.objective, "loss", flaky)
    before = {k: v.clone() for k, v in trainer.net.state_dict().items()}
    record = trainer.train_step()
    assert record["skipped"] == 1 and all(torch.equal(v, trainer.net.state_dict()[k]) for k, v in before.items())
    assert trainer.train_step()["skipped"] == 0 and trainer.nonfinite == 0
    with pytest.raises(TrainingAborted, match="3 consecutive non-finite losses"):
        for _ in range(5):
            trainer.train_step()


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    from safetensors import SafetensorError

    from soundvcm.cli import main

    data = str(_synthetic_cache(tmp_path / "a", rows=8))
    run = tmp_path / "run"
    args = ["train", "--preset", "tiny_cpu", "--data", data, "--out", str(run), "--steps", "2", "batch_size=4",
            "checkpoint_every=1", "ema_snapshot_every=1", "val_every=0", "sample_every=0"]  # fmt: skip
    assert main(args) == 0
    good = latest_checkpoint(run / "checkpoints")
    import safetensors.torch

    def full_disk(*args, **kwargs):  # what safetensors raises when the disk fills up
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    capsys.readouterr()
    code = main(["train", "--out", str(run), "--data", data, "--resume", "--steps", "4", "--allow-changes"])
    raw = capsys.readouterr().err
    err = [ln for ln in re.split(r"[\r\n]", raw) if ln.startswith("soundvcm:")]
    assert code == 2 and len(err) == 1 and "could not be written" in err[0] and "StorageFull" in err[0], raw[-600:]
    assert latest_checkpoint(run / "checkpoints") == good
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]  # nothing half-written
    assert not [p for p in (run / "ema").iterdir() if p.name.startswith(".")]


def test_train_help_lists_every_preset():
    from soundvcm.cli.train import TRAIN_PRESET_NAMES

    assert tuple(TRAIN_PRESETS) == TRAIN_PRESET_NAMES


def test_overrides_and_presets():
    cfg = train_config("paper", ["lr=2e-4", "milestones=100,200", "compile=true"])
    assert (cfg.lr, cfg.milestones, cfg.compile, cfg.batch_size, cfg.objective) == (2e-4, (100, 200), True, 512, "vcm")
    assert train_config("fm_baseline").objective == "fm" and train_config("meanflow_baseline").objective == "meanflow"
    assert cfg.schedule(0) == pytest.approx(1 / 1001) and cfg.schedule(1500) == pytest.approx(0.01)
    paper = train_config("paper")  # warm-up 1k, x0.1 at 240k and 270k
    assert [paper.schedule(s) for s in (1_000, 5_000, 240_000, 280_000)] == pytest.approx([1.0, 1.0, 0.1, 0.01])
    with pytest.raises(ValueError, match="bad override"):
        train_config("paper", ["nope=1"])


# ----- end to end --------------------------------------------------------------------------
@pytest.mark.slow
def test_end_to_end_from_raw_media(tmp_path, monkeypatch):
    """Videos and audio files -> extract (tiny paper-structured encoders) -> train -> EMA -> generate."""
    media = tmp_path / "media"
    for i in range(3):
        make_video(media / f"v{i}.mp4", duration=1.2, size=(64, 48), audio_rate=16_000)
    write_audio(media / "a0.wav", make_tone(16_000, 1.2, freq=300.0), 16_000)
    write_audio(media / "silent.wav", np.zeros(16_000, dtype=np.float32), 16_000)
    (tmp_path / "video.tsv").write_text("path\tcaption\n" + "".join(f"media/v{i}.mp4\ta tone\n" for i in range(3)))
    (tmp_path / "audio.tsv").write_text("media/a0.wav\ta low tone\nmedia/silent.wav\tsilence\n")
    encoders = tiny_mmaudio_set("16k")
    from soundvcm.encoders import ENCODER_SPECS

    monkeypatch.setitem(ENCODER_SPECS, "mmaudio_16k", encoders.spec)
    v, _ = extract(tmp_path / "video.tsv", tmp_path / "cv", "mmaudio_16k", 1.0, 2, encoders=encoders, precision="fp32")
    a, usable = extract(tmp_path / "audio.tsv", tmp_path / "ca", "mmaudio_16k", 1.0, 2, encoders=encoders)
    assert v.precision["stages"] == {"visual": "fp32", "text": "fp32"}  # the cache records its precision
    assert CacheMeta.load(tmp_path / "cv").precision["requested"] == "fp32"
    with pytest.raises(CacheError, match="resume it with --precision fp32"):  # one cache, one precision
        extract(tmp_path / "video.tsv", tmp_path / "cv", "mmaudio_16k", 1.0, 2, encoders=encoders, precision="bf16")
    assert v.has_video and not a.has_video and len(FeatureCache(tmp_path / "ca")) == usable == 1  # silent skipped
    again, _ = extract(
        tmp_path / "video.tsv", tmp_path / "cv", "mmaudio_16k", 1.0, 2, encoders=encoders, precision="fp32"
    )
    assert again.rows == 3  # resumed: nothing left to do
    cached = FeatureCache(tmp_path / "cv").row(0)
    from soundvcm.media.audio import load_audio

    wave, _ = load_audio(media / "v0.mp4", 16_000, duration=1.0)
    wave = torch.nn.functional.pad(wave, (0, 16_384 - wave.numel())) * (0.95 / wave.abs().max())
    mean, _ = encoders.encode_audio(wave[None])
    assert torch.allclose(cached["mean"], mean[0], atol=1e-5)  # the cache holds what the encoder gives
    config = _config(steps=4, checkpoint_every=2, val_every=2, sample_every=0, objective="vcm", precision="fp32")
    trainer = Trainer(config, [str(tmp_path / "cv"), str(tmp_path / "ca")], tmp_path / "run", decoder=encoders)
    trainer.fit()
    written = trainer.samples()  # EMA samples: audio + spectrogram per row
    assert sorted(p.name for p in written) == ["sample_0.flac", "sample_0.png", "sample_1.flac", "sample_1.png"]
    assert list((tmp_path / "run" / "tb").iterdir())  # TensorBoard event file
    from soundvcm.pipeline import Pipeline

    exported = tmp_path / "run" / "ema_sigma0p05"
    from soundvcm.network.checkpoint import load_network
    from soundvcm.spec import read_spec

    net = load_network(exported)
    made = json.loads(exported.with_suffix(".json").read_text())["provenance"]["precision"]
    assert made["features"]["stages"]["visual"] == "fp32" and made["train"]["stages"] == {"train": "fp32"}
    spec = read_spec(exported)  # the run's spec travels with the exported weights
    assert spec == trainer.spec and spec.encoder_set == "mmaudio_16k" and spec.sampler.kind == "consistency"
    pipe = Pipeline(net, encoders, spec, torch.device("cpu"))
    result = pipe.generate(video=media / "v1.mp4", prompt="a tone", duration=1.0)
    assert result.wave.numel() == 16_000 and torch.isfinite(result.wave).all()


KILL_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import training_factory as T
from soundvcm import encoders
encoders.ENCODER_SPECS["test"] = T.tiny_spec()
from soundvcm.training.trainer import Trainer
Trainer(T.tiny_config(steps=100000, checkpoint_every=1, val_every=0, log_every=50), [{data!r}], {out!r}).fit()
"""


@pytest.mark.slow
def test_kill_9_leaves_a_loadable_checkpoint(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    data = str(_synthetic_cache(tmp_path / "a", rows=8))
    out = tmp_path / "run"
    script = KILL_SCRIPT.format(tests=str(Path(__file__).resolve().parents[1]), data=data, out=str(out))
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)

    def saved_step() -> int:
        found = latest_checkpoint(out / "checkpoints")
        return int(found.name.split("_")[1]) if found is not None else 0

    # kill it mid-run once it has written a few checkpoints (waits on the run, not on a clock;
    # the bound only stops a hung run from hanging the suite)
    deadline = time.time() + 600
    while saved_step() < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None and saved_step() >= 3, "the training process ended or never checkpointed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    latest = latest_checkpoint(out / "checkpoints")
    assert latest is not None
    resumed = Trainer(_config(steps=100000, checkpoint_every=1, val_every=0), [data], out, resume=True)
    assert resumed.step == int(latest.name.split("_")[1]) > 0
    resumed.fit(steps=1)


def test_cli_train_resume_and_ema_export(tmp_path, capsys):
    from soundvcm.cli import main

    data = str(_synthetic_cache(tmp_path / "a", rows=8))
    run = str(tmp_path / "run")
    args = ["train", "--preset", "tiny_cpu", "--data", data, "--out", run, "--steps", "2", "batch_size=4",
            "checkpoint_every=2", "ema_snapshot_every=2", "val_every=2", "sample_every=0", "lr=5e-4"]  # fmt: skip
    assert main(args) == 0
    err = capsys.readouterr().err  # stderr is no terminal here: plain progress lines, no bar
    assert "train step 2/2 loss=" in err and "eta=" in err and "step/s]" not in err
    assert main(["train", "--out", run, "--data", data, "--resume"]) == 0  # the saved config: nothing left to do
    # changes given with --resume are listed and need --allow-changes
    assert main(["train", "--out", run, "--data", data, "--resume", "--steps", "4"]) == 2
    assert "steps 2 -> 4; pass --allow-changes" in capsys.readouterr().err
    # the run records its caches: --resume without --data trains on them again
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"] == [data]
    assert main(["train", "--out", run, "--resume", "--steps", "4", "--allow-changes"]) == 0
    assert main(["train", "--out", str(tmp_path / "new"), "--preset", "tiny_cpu"]) == 2
    assert "--data is required" in capsys.readouterr().err
    trainer = Trainer(_config(), [data], tmp_path / "other")
    doc = json.loads(latest_checkpoint(tmp_path / "run" / "checkpoints").joinpath("state.json").read_text())
    assert doc["step"] == 4 and doc["config"]["lr"] == 5e-4 and doc["config"]["steps"] == 4  # lr kept, not the preset's
    del trainer
    assert main(args) == 2 and "already holds a run" in capsys.readouterr().err
    assert main(["ema", run, "--sigma-rel", "0.1"]) == 0
    assert (tmp_path / "run" / "ema_sigma0p1.safetensors").is_file()
    # --step: the EMA as it was then, from the snapshots up to it (here: the one at step 2)
    assert main(["ema", run, "--step", "2", "--out", str(tmp_path / "at2")]) == 0 and main(["ema", run]) == 0
    at2, last = (json.loads((tmp_path / n).read_text()) for n in ("at2.json", "run/ema_sigma0p05.json"))
    assert at2["provenance"]["step"] == 2 and at2["provenance"]["ema"]["snapshots"] == 2  # two sigma_rels at step 2
    assert last["provenance"]["step"] == 4
    from safetensors.torch import load_file

    w2, w4 = (load_file(str(tmp_path / n)) for n in ("at2.safetensors", "run/ema_sigma0p05.safetensors"))
    assert any(not torch.equal(w2[k], w4[k]) for k in w2)
    assert main(["train", "--preset", "nope", "--data", data, "--out", str(tmp_path / "x")]) == 2
    assert (
        main(["train", "--preset", "tiny_cpu", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
    )
    err = capsys.readouterr().err
    assert "unknown training preset" in err and "not a feature cache" in err


@pytest.mark.parametrize(
    "flags, name, sync, latent",
    [
        ([], "lite2", (44, 192), 160),  # the default is the shipped set
        (["--encoders", "lite3"], "lite3", (44, 192), 20),
        (["--encoders", "lite"], "lite", (16, 128), 160),
    ],
)
def test_cli_extract_lite_cache(tmp_path, flags, name, sync, latent):
    """The real lite encoders through `soundvcm extract`: shapes follow the set (lite2 by default)."""
    from soundvcm.cli import main

    make_video(tmp_path / "v.mp4", duration=1.2, size=(64, 48), audio_rate=22_050)
    (tmp_path / "list.tsv").write_text("v.mp4\tbeeps\n")
    argv = ["extract", "--input", str(tmp_path / "list.tsv"), "--out", str(tmp_path / "cache"), "--duration", "1"]
    assert main([*argv, *flags]) == 0
    cache = FeatureCache(tmp_path / "cache")
    row = cache.row(0)
    assert cache.meta.encoder_set == name and len(cache.meta.weight_hashes) == (4 if name == "lite3" else 3)
    assert row["mean"].shape == (44, latent) and row["clip"].shape == (8, 1280) and row["sync"].shape == sync
    assert row["text"].shape == (77, 384)
    if latent == 160:  # the mel itself: exact, no posterior width
        assert row["std"].abs().max() == 0
    else:  # the mel VAE's posterior
        assert row["std"].shape == (44, 20) and (row["std"] > 0).all()


def test_extract_splits_shards_across_ranks_and_resumes(tmp_path, monkeypatch):
    encoders = tiny_mmaudio_set("16k")
    from soundvcm.encoders import ENCODER_SPECS

    monkeypatch.setitem(ENCODER_SPECS, "mmaudio_16k", encoders.spec)
    for i in range(5):
        write_audio(tmp_path / f"a{i}.wav", make_tone(16_000, 1.0, freq=200.0 + 50 * i), 16_000)
    (tmp_path / "list.tsv").write_text("".join(f"a{i}.wav\ttone {i}\n" for i in range(5)))
    args = (tmp_path / "list.tsv", tmp_path / "split", "mmaudio_16k", 1.0, 2)
    extract(*args, rank=1, world=2, encoders=encoders)  # rank 1 alone: shard 1 only
    assert sorted(p.name for p in (tmp_path / "split").glob("shard_*")) == ["shard_00001.safetensors"]
    extract(*args, rank=0, world=2, encoders=encoders)  # rank 0: shards 0 and 2
    extract(tmp_path / "list.tsv", tmp_path / "single", "mmaudio_16k", 1.0, 2, rank=0, world=1, encoders=encoders)
    split, single = FeatureCache(tmp_path / "split"), FeatureCache(tmp_path / "single")
    assert len(split) == len(single) == 5
    for i in range(5):
        assert torch.allclose(split.row(i)["mean"], single.row(i)["mean"], atol=1e-6)
    with pytest.raises(CacheError, match="holds a different extraction"):
        extract(tmp_path / "list.tsv", tmp_path / "split", "mmaudio_16k", 1.0, 3, encoders=encoders)
