"""Ray Data engines on a local Ray instance (2 CPUs): `extract --engine ray` writes the local
engine's cache (same shards, rows, ids, validity; features within float tolerance), resumes, and
reports failed rows; `generate --engine ray` writes the local engine's outputs."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from safetensors import safe_open

from media_factory import make_video
from model_factory import debug_model as _model
from soundvcm.cli import main
from soundvcm.data.cache import FeatureCache
from soundvcm.media import load_audio
from soundvcm.scale.ray_engine import plan


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="the [scale] extra (ray[data]) is not installed")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("scale")
    for i in range(5):
        make_video(d / f"v{i}.mp4", duration=1.3 + 0.1 * i, size=(64, 48), audio_rate=22_050)
    rows = "".join(f"v{i}.mp4\tclip number {i}\n" for i in range(5)) + "missing.mp4\tgone\n"
    (d / "list.tsv").write_text("path\tcaption\n" + rows)
    return d


def _extract(media, out, *extra) -> int:
    return main(["extract", "--input", str(media / "list.tsv"), "--out", str(out), "--duration", "1",
                 "--rows-per-shard", "4", *extra])  # fmt: skip


def _shard_metadata(path):
    with safe_open(str(path), "pt") as f:
        return {k: json.loads(v) for k, v in f.metadata().items()}


@pytest.mark.slow
def test_ray_extraction_equals_the_local_engine_and_resumes(local_ray, media, tmp_path, capsys):
    assert _extract(media, tmp_path / "local") == 0
    assert _extract(media, tmp_path / "ray", "--engine", "ray") == 0
    out = capsys.readouterr()
    assert "skipping" in out.err and "missing.mp4" in out.err  # the failed row is reported, not fatal
    assert "5 of 6 rows usable" in out.out
    local, distributed = FeatureCache(tmp_path / "local"), FeatureCache(tmp_path / "ray")
    assert local.meta == distributed.meta and len(local) == len(distributed) == 5
    shards = sorted(p.name for p in (tmp_path / "local").glob("shard_*"))
    assert shards == sorted(p.name for p in (tmp_path / "ray").glob("shard_*")) == [
        "shard_00000.safetensors", "shard_00001.safetensors"]  # fmt: skip
    for name in shards:  # ids, captions and validity flags; every tensor within float tolerance
        assert _shard_metadata(tmp_path / "local" / name) == _shard_metadata(tmp_path / "ray" / name)
        with safe_open(str(tmp_path / "local" / name), "pt") as a, safe_open(str(tmp_path / "ray" / name), "pt") as b:
            assert sorted(a.keys()) == sorted(b.keys()) == ["clip", "mean", "std", "sync", "text"]
            for k in a.keys():  # noqa: SIM118 (safe_open is not a dict)
                assert torch.allclose(a.get_tensor(k), b.get_tensor(k), atol=1e-5, rtol=1e-5), (name, k)
    # resume: a complete shard is left alone, a missing one is written again
    first = tmp_path / "ray" / "shard_00000.safetensors"
    before = first.stat().st_mtime_ns
    (tmp_path / "ray" / "shard_00001.safetensors").unlink()
    assert _extract(media, tmp_path / "ray", "--engine", "ray") == 0
    assert first.stat().st_mtime_ns == before and (tmp_path / "ray" / "shard_00001.safetensors").is_file()
    assert _shard_metadata(tmp_path / "ray" / "shard_00001.safetensors")["valid"] == [True, False]


@pytest.mark.slow
def test_ray_generation_writes_the_local_engines_outputs(local_ray, media, tmp_path, capsys):
    model = _model(tmp_path / "vcm")
    (tmp_path / "jobs.tsv").write_text(f"{media / 'v3.mp4'}\tthunder\n{media / 'v4.mp4'}\t\n\tbirds singing\n")
    common = ["generate", str(tmp_path / "jobs.tsv"), "--model", str(model), "--duration", "1", "--seed", "3"]
    threads = torch.get_num_threads()
    torch.set_num_threads(plan(2, 0).threads)  # the actor's (a random network's output depends on the thread count)
    try:
        assert main([*common, "--out", str(tmp_path / "local")]) == 0
    finally:
        torch.set_num_threads(threads)
    assert main([*common, "--out", str(tmp_path / "ray"), "--engine", "ray"]) == 0
    local = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert local == sorted(p.name for p in (tmp_path / "ray").iterdir()) and len(local) == 5  # 3 flac + 2 mp4
    for name in local:
        a, _ = load_audio(tmp_path / "local" / name, 22_050)
        b, _ = load_audio(tmp_path / "ray" / name, 22_050)
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-4), name
    # resume: existing outputs are skipped
    capsys.readouterr()
    code = main([*common, "--out", str(tmp_path / "ray"), "--engine", "ray", "--skip-existing"])
    assert code == 0 and "nothing to do" in capsys.readouterr().out


def test_without_ray_the_engine_says_how_to_install_it(media, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    assert _extract(media, tmp_path / "x", "--engine", "ray") == 2
    assert "pip install 'soundvcm[scale]'" in capsys.readouterr().err
    assert main(["extract", "--input", str(media / "list.tsv"), "--out", str(tmp_path / "y"), "--actors", "2"]) == 2
    assert "go with --engine ray" in capsys.readouterr().err


def test_the_plan_splits_cpus_between_decoding_and_the_models():
    two = plan(2, 0)  # this machine: one actor with both cores' threads, decoding beside it
    assert (two.actors, two.threads, two.gpus) == (1, 2, 0.0)
    assert two.decoders * two.decoder_cpus + two.actors * two.actor_cpus <= 2
    gpu_node = plan(32, 8)
    assert gpu_node.actors == 8 and gpu_node.gpus == 1.0
    assert gpu_node.decoders * gpu_node.decoder_cpus + gpu_node.actors * gpu_node.actor_cpus <= 32
    assert plan(64, 0, actors=4).actors == 4


@pytest.mark.slow
def test_a_failing_ray_job_is_reported_and_the_others_are_written(local_ray, tmp_path, capsys):
    from soundvcm.generate import GenerateRequest, Job
    from soundvcm.scale.ray_engine import generate_ray

    model = _model(tmp_path / "vcm")
    jobs = [Job("rain", prompt="rain on a roof"), Job("gone", video=tmp_path / "vanished.mp4")]
    assert generate_ray(str(model), jobs, tmp_path / "out", GenerateRequest(duration=1.0, seed=3)) == 1
    err = capsys.readouterr().err
    assert "gone" in err and "vanished.mp4" in err and "1 of 2 job(s) failed" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["rain.flac"]
