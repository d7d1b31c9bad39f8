"""SIGTERM is handled like Ctrl-C, and what a killed process left behind is removed by the next run
(issue 24): 0 leftover temporaries for generate, extract, train, data and demo."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from media_factory import make_video
from soundvcm.atomic import atomic_write, is_stale, remove_stale, temporary_dir


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp" in p.name or p.name.startswith(".ckpt_")]


def _wait_for(condition, what: str, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _cli(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "soundvcm.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def _terminate(proc: subprocess.Popen) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def test_stale_temporaries_are_those_of_dead_processes(tmp_path):
    dead, alive = _dead_pid(), os.getpid()
    stale = tmp_path / f".clip.p{dead}.abc.tmp.mp4"
    mine = tmp_path / f".clip.p{alive}.def.tmp.mp4"
    old = tmp_path / ".clip.xyz.tmp.flac"  # named before pids were recorded
    for p in (stale, mine, old):
        p.write_bytes(b"partial")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    assert is_stale(stale) and not is_stale(mine) and is_stale(old)
    assert sorted(remove_stale(tmp_path)) == sorted([stale, old]) and mine.exists()
    nested = tmp_path / "a" / "b" / f".x.p{dead}.q.tmp.json"
    nested.parent.mkdir(parents=True)
    nested.write_text("{")
    assert remove_stale(tmp_path, recursive=True) == [nested]
    folder = temporary_dir("soundvcm-test-", tmp_path)
    assert f"p{os.getpid()}." in folder.name and not is_stale(folder)
    (tmp_path / f"soundvcm-test-p{dead}.zz").mkdir()
    temporary_dir("soundvcm-test-", tmp_path)  # a new one removes the dead process's folder
    assert not (tmp_path / f"soundvcm-test-p{dead}.zz").exists()
    target = atomic_write(tmp_path / "done.txt", lambda tmp: tmp.write_text("ok"))
    assert target.read_text() == "ok" and not list(tmp_path.glob(".done.*"))


@pytest.mark.slow
def test_data_foley_stopped_by_sigterm_leaves_nothing_and_resumes(tmp_path):
    out = tmp_path / "world"
    (out / "train").mkdir(parents=True)
    planted = out / "train" / f".foley_train_00001.p{_dead_pid()}.aa.tmp.mp4"  # as a SIGKILL leaves it
    planted.write_bytes(b"half a video")
    proc = _cli("data", "foley", out, "--train", "400", "--val", "0", "--test", "0")
    _wait_for(lambda: len(list((out / "train").glob("*.events.json"))) >= 2, "two clips")
    code, err = _terminate(proc)
    assert code == 143 and "terminated" in err and "Traceback" not in err, err
    assert _leftovers(out) == [] and not planted.exists()
    done = len(list((out / "train").glob("*.events.json")))
    assert 2 <= done < 400
    proc = _cli("data", "foley", out, "--train", str(done + 1), "--val", "0", "--test", "0")
    proc.communicate(timeout=300)
    assert proc.returncode == 0 and len(list((out / "train").glob("*.mp4"))) == done + 1


@pytest.mark.slow
def test_generate_and_extract_stopped_by_sigterm_leave_nothing(tmp_path):
    from soundvcm.network.checkpoint import save_network
    from soundvcm.network.mmdit import MMDiT
    from soundvcm.spec import ModelSpec, preset_for_encoders

    config, encoder_set = preset_for_encoders("debug", "lite")
    spec = ModelSpec.create("debug", encoder_set, "vcm").to_dict()
    save_network(tmp_path / "tiny", MMDiT(config), preset="debug", encoder_set=encoder_set, objective="vcm", spec=spec)
    # Three real clips behind 240 names: the runs would take a minute, so the signal lands mid-run
    # however late this process sees the first output (a CI run once saw all 12 of 12 clips done).
    sources = [make_video(tmp_path / f"src{i}.mp4", duration=1.5, size=(96, 64)) for i in range(3)]
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(240):
        (videos / f"v{i:03d}.mp4").symlink_to(sources[i % 3])
    out = tmp_path / "out"
    proc = _cli("generate", videos, "--model", tmp_path / "tiny", "--duration", "1", "--out", out)
    _wait_for(lambda: len(list(out.glob("*.mp4"))) >= 1, "a first output")
    code, err = _terminate(proc)
    done = len(list(out.glob("v*.mp4")))
    assert code == 143 and "terminated" in err and "Traceback" not in err, (code, done, err[-2000:])
    assert _leftovers(out) == [] and done < 240
    (tmp_path / "list.tsv").write_text("".join(f"{v}\tsomething\n" for v in sorted(videos.iterdir())))
    cache = tmp_path / "cache"
    proc = _cli("extract", "--input", tmp_path / "list.tsv", "--out", cache, "--duration", "1", "--rows-per-shard", "1")
    _wait_for(lambda: len(list(cache.glob("shard_*.safetensors"))) >= 1, "a first shard")
    code, err = _terminate(proc)
    shards = len(list(cache.glob("shard_*.safetensors")))
    assert code == 143 and "terminated" in err and "Traceback" not in err, (code, shards, err[-2000:])
    assert _leftovers(cache) == [] and shards < 240


KILL_TRAIN = """
import sys; sys.path.insert(0, {tests!r})
import training_factory as T
from soundvcm import encoders
encoders.ENCODER_SPECS["test"] = T.tiny_spec()
from soundvcm.cli import main
sys.exit(main(["train", "--preset", "tiny_cpu", "--data", {data!r}, "--out", {out!r}, "--steps", "100000",
               "checkpoint_every=1", "val_every=0", "batch_size=4", "ema_snapshot_every=2"]))
"""


@pytest.mark.slow
def test_train_stopped_by_sigterm_saves_a_checkpoint_and_leaves_nothing(tmp_path):
    from soundvcm.training.checkpoint import latest_checkpoint
    from training_factory import synthetic_cache as _synthetic_cache

    data = str(_synthetic_cache(tmp_path / "a", rows=8))
    out = tmp_path / "run"
    script = KILL_TRAIN.format(tests=str(Path(__file__).resolve().parents[1]), data=data, out=str(out))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (out / "checkpoints" / "latest").exists(), "a first checkpoint")
    code, err = _terminate(proc)
    assert code == 130 and "saved" in err and "Traceback" not in err, err  # stopped at a step boundary
    assert latest_checkpoint(out / "checkpoints") is not None and _leftovers(out) == []


@pytest.mark.slow
def test_demo_stopped_by_sigterm_removes_its_folder(tmp_path):
    pytest.importorskip("gradio")
    from soundvcm.network.checkpoint import save_network
    from soundvcm.network.mmdit import MMDiT
    from soundvcm.spec import preset_for_encoders

    config, encoder_set = preset_for_encoders("debug", "lite")
    save_network(tmp_path / "tiny", MMDiT(config), preset="debug", encoder_set=encoder_set, objective="vcm")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "TMPDIR": str(tmp_path), "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "-m", "soundvcm.cli", "demo", "--model", str(tmp_path / "tiny"),
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)  # fmt: skip

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    _wait_for(listening, "the demo's port")
    folders = list(tmp_path.glob("soundvcm-demo-*"))
    assert len(folders) == 1 and f"p{proc.pid}." in folders[0].name
    code, err = _terminate(proc)
    assert "Traceback" not in err, err
    assert not folders[0].exists()
