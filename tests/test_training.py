"""Feature caches, data mixing and the trainer: round trips, MMAudio's cache layout, exact
resume, robustness, and an end-to-end run
from media the tests make."""

from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from media_factory import make_tone, make_video
from soundvcm.data.cache import CacheError, CacheMeta, FeatureCache
from soundvcm.data.extract import extract
from soundvcm.data.mixing import MixedSource, exposure
from soundvcm.data.mmaudio_cache import MMAudioCache
from soundvcm.encoders.mmaudio_set import tiny_mmaudio_set
from soundvcm.media.audio import write_audio
from soundvcm.training.checkpoint import latest_checkpoint
from soundvcm.training.config import TRAIN_PRESETS, train_config
from soundvcm.training.posthoc_ema import PostHocEMA, sigma_rel_to_gamma, solve_weights, synthesize
from soundvcm.training.trainer import Trainer, TrainingAborted
from training_factory import DIMS, synthetic_cache, tiny_config, tiny_spec  # noqa: F401

_synthetic_cache = synthetic_cache
_config = tiny_config


@pytest.fixture(autouse=True)
def _test_encoder_set(tiny_encoder_set):
    """Register the tiny dimensions of training_factory as encoder set 'test' for every test here."""


# ----- caches ------------------------------------------------------------------------------
def test_cache_round_trip_and_corrupt_shard(tmp_path):
    root = _synthetic_cache(tmp_path / "c", rows=10)
    cache = FeatureCache(root)
    assert len(cache) == 10 and cache.meta.num_shards == 3
    from safetensors.torch import load_file

    stored = load_file(str(root / "shard_00001.safetensors"))
    assert torch.equal(cache.row(5)["clip"], stored["clip"][1])
    (root / "shard_00002.safetensors").write_bytes(b"garbage" * 10)
    fresh = FeatureCache(root)
    with pytest.raises(CacheError, match="shard_00002.safetensors: corrupt shard"):
        fresh.row(9)


def test_mismatched_caches_are_refused(tmp_path):
    a = _synthetic_cache(tmp_path / "a", rows=4)
    b = _synthetic_cache(tmp_path / "b", rows=4)
    meta = json.loads((b / "meta.json").read_text())
    meta["duration"] = 2.0
    (b / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CacheError, match="do not match: duration: 1.0 vs 2.0"):
        MixedSource.open([str(a), str(b)])


def test_reads_mmaudio_tensordict_cache(tmp_path):
    tensordict = pytest.importorskip("tensordict")
    data = {
        "mean": torch.randn(3, 250, 20), "std": torch.rand(3, 250, 20),
        "clip_features": torch.randn(3, 64, 1024), "sync_features": torch.randn(3, 192, 768),
        "text_features": torch.randn(3, 77, 1024),
    }  # fmt: skip
    tensordict.TensorDict(data, batch_size=[3]).memmap_(str(tmp_path / "vgg-val"))
    cache = MMAudioCache(tmp_path / "vgg-val")
    assert cache.meta.encoder_set == "mmaudio_16k" and cache.meta.has_video and len(cache) == 3
    row = cache.row(2)
    assert torch.equal(row["clip"], data["clip_features"][2]) and torch.equal(row["mean"], data["mean"][2])
    audio_only = {k: data[k] for k in ("mean", "std", "text_features")}
    tensordict.TensorDict(audio_only, batch_size=[3]).memmap_(str(tmp_path / "audiocaps"))
    caps = MixedSource.open([str(tmp_path / "vgg-val"), str(tmp_path / "audiocaps")])
    assert not caps.caches[1].meta.has_video
    (tmp_path / "audiocaps" / "mean.memmap").write_bytes(b"short")
    with pytest.raises(CacheError, match="mean.memmap: missing or truncated"):
        MMAudioCache(tmp_path / "audiocaps")


def test_mixing_weights_are_honoured(tmp_path):
    a = _synthetic_cache(tmp_path / "a", rows=40)
    b = _synthetic_cache(tmp_path / "b", rows=4, has_video=False, seed=1)
    equal = exposure(MixedSource.open([str(a), str(b)]), 4000)
    weighted = exposure(MixedSource.open([f"{a}:3", f"{b}:1"]), 4000)
    # equal exposure whatever the sizes (binomial sd ~0.008), and 3:1 when asked
    assert abs(equal[0] - 0.5) < 0.03 and abs(weighted[0] - 0.75) < 0.03


def test_text_audio_rows_get_null_visual_features(tmp_path):
    from soundvcm.network.mmdit import MMDiT
    from soundvcm.spec import preset_for_encoders

    b = _synthetic_cache(tmp_path / "b", rows=4, has_video=False)
    net = MMDiT(replace(preset_for_encoders("debug", "test")[0]))
    batch = MixedSource.open([str(b)]).batch(net, 3, torch.Generator().manual_seed(0))
    null = net.null_conditions(3)
    assert torch.equal(batch.conditions["clip"], null["clip"]) and batch.conditions["clip"].requires_grad


# ----- EMA ---------------------------------------------------------------------------------
def test_posthoc_ema_known_answers(tmp_path):
    assert abs(sigma_rel_to_gamma(0.05) - 16.97) < 0.01  # EDM2's gamma for sigma_rel 0.05
    # reproducing one of the snapshots exactly: weight 1 on it
    w = solve_weights([100, 200, 200], [sigma_rel_to_gamma(0.05), sigma_rel_to_gamma(0.05), sigma_rel_to_gamma(0.1)],
                      200, sigma_rel_to_gamma(0.1))  # fmt: skip
    assert np.allclose(w, [0, 0, 1], atol=1e-6)
    net = torch.nn.Linear(1, 1, bias=False)
    ema = PostHocEMA(net, (0.05, 0.1), snapshot_every=10, folder=tmp_path)
    for step in range(1, 41):  # weight = step: the power EMA is a known weighted mean
        net.weight.data.fill_(float(step))
        ema.update(net)
    gamma = sigma_rel_to_gamma(0.05)
    steps = np.arange(1, 41, dtype=np.float64)
    # closed form at t = 40: theta_i weighs (i^(g+1) - (i-1)^(g+1)) / t^(g+1), about i^g (EDM2 Eq. 1)
    weights = steps ** (gamma + 1) - (steps - 1) ** (gamma + 1)
    expected = float((weights * steps).sum() / weights.sum())
    assert abs(float(ema.emas[0]["weight"]) - expected) < 1e-3
    synth, info = synthesize(tmp_path, 0.05, 40)
    assert abs(float(synth["weight"]) - expected) < 0.05 and info["snapshots"] == 8
    # a run stopped after its last snapshot (Ctrl-C at step 47): the export lands on that snapshot,
    # with weights summing to 1, instead of a scaled-down network (the weights once summed to 0.45)
    late, info = synthesize(tmp_path, 0.05, 47)
    assert info["step"] == 40 and abs(sum(json.loads(info["weights"])) - 1) < 0.02
    assert float(late["weight"]) == pytest.approx(float(synth["weight"]), rel=1e-6)


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
import test_training as T
from soundvcm import encoders
encoders.ENCODER_SPECS["test"] = T.tiny_spec()
from soundvcm.training.trainer import Trainer
Trainer(T._config(steps=100000, checkpoint_every=1, val_every=0, log_every=50), [{data!r}], {out!r}).fit()
"""


@pytest.mark.slow
def test_kill_9_leaves_a_loadable_checkpoint(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    data = str(_synthetic_cache(tmp_path / "a", rows=8))
    out = tmp_path / "run"
    script = KILL_SCRIPT.format(tests=str(Path(__file__).parent), data=data, out=str(out))
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
    "flags, name, sync",
    [([], "lite2", (44, 192)), (["--encoders", "lite"], "lite", (16, 128))],  # the default is the shipped set
)
def test_cli_extract_lite_cache(tmp_path, flags, name, sync):
    """The real lite encoders through `soundvcm extract`: shapes follow the set (lite2 by default)."""
    from soundvcm.cli import main

    make_video(tmp_path / "v.mp4", duration=1.2, size=(64, 48), audio_rate=22_050)
    (tmp_path / "list.tsv").write_text("v.mp4\tbeeps\n")
    argv = ["extract", "--input", str(tmp_path / "list.tsv"), "--out", str(tmp_path / "cache"), "--duration", "1"]
    assert main([*argv, *flags]) == 0
    cache = FeatureCache(tmp_path / "cache")
    row = cache.row(0)
    assert cache.meta.encoder_set == name and len(cache.meta.weight_hashes) == 3
    assert row["mean"].shape == (44, 160) and row["clip"].shape == (8, 1280) and row["sync"].shape == sync
    assert row["text"].shape == (77, 384) and row["std"].abs().max() == 0


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
    from soundvcm.training.config import resume_config, train_config

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
