"""Feature caches, data mixing and the trainer: round trips, MMAudio's cache layout, exact
resume, a 2-process gloo step against gradient accumulation, robustness, and an end-to-end run
from media the tests make."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from media_factory import make_tone, make_video
from soundvcm.data.cache import CacheError, CacheMeta, FeatureCache, write_shard
from soundvcm.data.extract import extract
from soundvcm.data.mixing import MixedSource, exposure
from soundvcm.data.mmaudio_cache import MMAudioCache
from soundvcm.encoders.mmaudio_set import tiny_mmaudio_set
from soundvcm.media.audio import write_audio
from soundvcm.training.checkpoint import latest_checkpoint
from soundvcm.training.config import TRAIN_PRESETS, train_config
from soundvcm.training.posthoc_ema import PostHocEMA, sigma_rel_to_gamma, solve_weights, synthesize
from soundvcm.training.trainer import Trainer, TrainingAborted

DIMS = dict(latent=(32, 4), clip=(8, 6), sync=(16, 5), text=(77, 3))  # 1 s, tiny feature sizes


def _synthetic_cache(root: Path, rows: int, has_video: bool = True, seed: int = 0, per_shard: int = 4) -> Path:
    """A cache of random features with the lite encoder set's name and tiny dimensions."""
    g = torch.Generator().manual_seed(seed)
    meta = CacheMeta(
        encoder_set="test", sample_rate=16_000, clip_fps=8.0, sync_fps=25.0, duration=1.0,
        latent_shape=list(DIMS["latent"]), clip_shape=list(DIMS["clip"]), sync_shape=list(DIMS["sync"]),
        text_shape=list(DIMS["text"]), has_video=has_video, rows=rows, rows_per_shard=per_shard,
    )  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    meta.save(root)
    for shard in range(meta.num_shards):
        n = min(per_shard, rows - shard * per_shard)
        t = {
            "mean": torch.randn(n, *DIMS["latent"], generator=g) + 2.0,
            "std": torch.rand(n, *DIMS["latent"], generator=g) * 0.1,
            "text": torch.randn(n, *DIMS["text"], generator=g),
        }
        if has_video:
            t["clip"] = torch.randn(n, *DIMS["clip"], generator=g)
            t["sync"] = torch.randn(n, *DIMS["sync"], generator=g)
        ids = [f"r{shard * per_shard + i}" for i in range(n)]
        write_shard(root, shard, t, ids, ["caption"] * n, [True] * n)
    return root


def _test_spec():
    from soundvcm.encoders.base import EncoderSetSpec
    from soundvcm.media.video import FrameSpec
    from soundvcm.sequence import SequenceConfig

    return EncoderSetSpec(
        "test", DIMS["clip"][1], DIMS["sync"][1], DIMS["text"][1], 77, DIMS["latent"][1],
        SequenceConfig(duration=1.0), FrameSpec(8, 8, 8), FrameSpec(25, 8, 8),
    )  # fmt: skip


@pytest.fixture(autouse=True)
def _test_encoder_set(monkeypatch):
    """Register the tiny dimensions above as encoder set 'test' (network sizes follow the cache)."""
    from soundvcm import encoders

    monkeypatch.setitem(encoders.ENCODER_SPECS, "test", _test_spec())


def _config(**kw):
    base = replace(
        TRAIN_PRESETS["tiny_cpu"], steps=6, batch_size=4, checkpoint_every=3, val_every=3, sample_every=0,
        log_every=2, ema_snapshot_every=2, warmup=2, milestones=(5,), latent_stats_rows=8, val_batch=4,
    )  # fmt: skip
    return replace(base, **kw)


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
    from soundvcm.network.mmdit import MMDiT, preset_for_encoders

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


def _ddp_worker(rank: int, world: int, port: int, data: list[str], out: str, result: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))  # fmt: skip
    torch.set_num_threads(1)
    from soundvcm import encoders

    encoders.ENCODER_SPECS["test"] = _test_spec()  # a fresh process: register the test set again
    trainer = Trainer(_config(steps=2, checkpoint_every=0, val_every=0), data, Path(out), device="cpu")
    trainer.fit(steps=2)
    if rank == 0:
        torch.save({k: v.clone() for k, v in trainer.net.state_dict().items()}, result)
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_process_gloo_step_equals_gradient_accumulation(tmp_path):
    data = [str(_synthetic_cache(tmp_path / "a", rows=12))]
    single = Trainer(_config(steps=2, checkpoint_every=0, val_every=0, accumulation=2), data, tmp_path / "single")
    single.fit(steps=2)
    result = tmp_path / "ddp.pt"
    mp.spawn(_ddp_worker, args=(2, _free_port(), data, str(tmp_path / "ddp"), str(result)), nprocs=2, join=True)
    ddp = torch.load(result, weights_only=True)
    for k, v in single.net.state_dict().items():
        assert torch.allclose(v, ddp[k], atol=1e-6, rtol=1e-5), k


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


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    data = [str(_synthetic_cache(tmp_path / "a", rows=8))]
    trainer = Trainer(_config(), data, tmp_path / "run")
    trainer.fit(steps=3)  # checkpoint at step 3
    good = latest_checkpoint(tmp_path / "run" / "checkpoints")
    import soundvcm.training.checkpoint as ckpt

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt, "save_file", full_disk)
    trainer.train_step()
    with pytest.raises(OSError, match="No space left"):
        trainer.checkpoint()
    assert latest_checkpoint(tmp_path / "run" / "checkpoints") == good
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [good.name, "latest"]


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
    v = extract(tmp_path / "video.tsv", tmp_path / "cv", "mmaudio_16k", 1.0, 2, encoders=encoders)
    a = extract(tmp_path / "audio.tsv", tmp_path / "ca", "mmaudio_16k", 1.0, 2, encoders=encoders)
    assert v.has_video and not a.has_video and len(FeatureCache(tmp_path / "ca")) == 1  # silent row skipped
    again = extract(tmp_path / "video.tsv", tmp_path / "cv", "mmaudio_16k", 1.0, 2, encoders=encoders)
    assert again.rows == 3  # resumed: nothing left to do
    cached = FeatureCache(tmp_path / "cv").row(0)
    from soundvcm.media.audio import load_audio

    wave, _ = load_audio(media / "v0.mp4", 16_000, duration=1.0)
    wave = torch.nn.functional.pad(wave, (0, 16_384 - wave.numel())) * (0.95 / wave.abs().max())
    mean, _ = encoders.encode_audio(wave[None])
    assert torch.allclose(cached["mean"], mean[0], atol=1e-5)  # the cache holds what the encoder gives
    config = _config(steps=4, checkpoint_every=2, val_every=2, sample_every=0, objective="vcm")
    trainer = Trainer(config, [str(tmp_path / "cv"), str(tmp_path / "ca")], tmp_path / "run", decoder=encoders)
    trainer.fit()
    written = trainer.samples()  # EMA samples: audio + spectrogram per row
    assert sorted(p.name for p in written) == ["sample_0.flac", "sample_0.png", "sample_1.flac", "sample_1.png"]
    assert list((tmp_path / "run" / "tb").iterdir())  # TensorBoard event file
    from soundvcm.pipeline import Pipeline

    exported = tmp_path / "run" / "ema_sigma0p05"
    from soundvcm.network.checkpoint import load_network

    net = load_network(exported)
    pipe = Pipeline(net, encoders, "mmaudio_16k", "vcm", torch.device("cpu"))
    result = pipe.generate(video=media / "v1.mp4", prompt="a tone", duration=1.0)
    assert result.wave.numel() == 16_000 and torch.isfinite(result.wave).all()


KILL_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import test_training as T
from soundvcm import encoders
encoders.ENCODER_SPECS["test"] = T._test_spec()
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
    deadline = time.time() + 60
    while time.time() < deadline and not (out / "checkpoints" / "latest").exists():
        time.sleep(0.2)
    time.sleep(1.5)  # let it write a few more checkpoints, then kill it mid-run
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
    args = ["train", "--preset", "tiny_cpu", "--data", data, "--out", str(tmp_path / "run"), "--steps", "4",
            "batch_size=4", "checkpoint_every=2", "ema_snapshot_every=2", "val_every=2", "sample_every=0"]  # fmt: skip
    assert main(args[:8] + ["2"] + args[9:]) == 0  # 2 steps first
    assert main(args + ["--resume"]) == 0
    assert main(args) == 2 and "already holds a run" in capsys.readouterr().err
    assert main(["ema", str(tmp_path / "run"), "--sigma-rel", "0.1"]) == 0
    assert (tmp_path / "run" / "ema_sigma0p1.safetensors").is_file()
    assert main(["train", "--preset", "nope", "--data", data, "--out", str(tmp_path / "x")]) == 2
    assert (
        main(["train", "--preset", "tiny_cpu", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
    )
    err = capsys.readouterr().err
    assert "unknown training preset" in err and "not a feature cache" in err


def test_cli_extract_lite_cache(tmp_path):
    """The real lite encoders through `soundvcm extract`: shapes follow the lite set."""
    from soundvcm.cli import main

    make_video(tmp_path / "v.mp4", duration=1.2, size=(64, 48), audio_rate=22_050)
    (tmp_path / "list.tsv").write_text("v.mp4\tbeeps\n")
    assert (
        main(["extract", "--input", str(tmp_path / "list.tsv"), "--out", str(tmp_path / "cache"), "--duration", "1"])
        == 0
    )
    cache = FeatureCache(tmp_path / "cache")
    row = cache.row(0)
    assert cache.meta.encoder_set == "lite" and len(cache.meta.weight_hashes) == 3
    assert row["mean"].shape == (44, 160) and row["clip"].shape == (8, 1280) and row["sync"].shape == (16, 128)
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
