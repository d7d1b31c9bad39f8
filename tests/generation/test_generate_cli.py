"""`soundvcm generate` as a user runs it: outputs, profiles, batches, warnings and the default span."""

from __future__ import annotations

import re
from pathlib import Path

import av
import pytest

from media_factory import corrupt_middle, make_video
from model_factory import debug_model, mismatched_model, run_cli
from soundvcm.cli import main
from soundvcm.media import load_audio, probe

SR = 22_050
_model = debug_model
_run = run_cli


# ----- CLI ---------------------------------------------------------------------------------
def test_cli_generate_writes_flac_and_mp4(workdir, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["generate", workdir / "clip.mp4", "--model", workdir / "vcm", "--duration", "2", "--out", out, "--profile"]
    code, stdout, _ = _run(args, capsys)
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["clip.flac", "clip.mp4"]
    wave, sr = load_audio(out / "clip.flac")
    assert sr == SR and wave.numel() == 2 * SR
    info = probe(out / "clip.mp4")
    assert info.has_audio and info.width == 96
    for stage in ("decode", "visual", "sync", "network", "latent_decode", "vocoder", "mux"):
        assert f"| {stage} |" in stdout


def test_cli_text_only(workdir, tmp_path, capsys):
    args = ["generate", "--prompt", "Rain on a roof!", "--model", workdir / "vcm", "--duration", "1", "--out", tmp_path]
    code, _, _ = _run(args, capsys)
    assert code == 0 and [p.name for p in tmp_path.iterdir()] == ["rain_on_a_roof.flac"]


def test_cli_batch_folder_and_tsv_continue_past_failures(workdir, tmp_path, capsys):
    videos = tmp_path / "videos"
    make_video(videos / "a.mp4", duration=1.0)
    make_video(videos / "b.mov", duration=1.0)
    (videos / "c.mp4").write_bytes(b"not a video")
    out = tmp_path / "out"
    code, _, err = _run(["generate", videos, "--model", workdir / "vcm", "--duration", "1", "--out", out], capsys)
    assert code == 1 and "c.mp4: not a readable media file" in err and "1 of 3 job(s) failed" in err
    assert sorted(p.name for p in out.iterdir()) == ["a.flac", "a.mp4", "b.flac", "b.mp4"]
    tsv = tmp_path / "jobs.tsv"
    tsv.write_text("video\tprompt\nvideos/a.mp4\tfootsteps\n\tbirds singing\n")
    out2 = tmp_path / "out2"
    code, _, _ = _run(["generate", tsv, "--model", workdir / "vcm", "--duration", "1", "--out", out2], capsys)
    assert code == 0 and sorted(p.name for p in out2.iterdir()) == ["a.flac", "a.mp4", "birds_singing.flac"]


def test_cli_corrupt_middle_warns_and_works(workdir, tmp_path, capsys):
    good = make_video(tmp_path / "good.mp4", duration=4.0, size=(160, 120), audio_rate=None)
    bad = corrupt_middle(good, tmp_path / "bad.mp4", fraction=0.5, length=2000)
    out = tmp_path / "out"
    code, _, err = _run(["generate", bad, "--model", workdir / "vcm", "--duration", "3", "--out", out], capsys)
    assert code == 0 and (out / "bad.mp4").is_file()
    assert re.search(r"warning: \S*bad.mp4: skipped \d+ corrupt packet.* from \d\.\d\d s", err), err  # and it says so
    assert "re-encoded without them" in err
    errors = 0
    with av.open(str(out / "bad.mp4")) as c:  # the output decodes all through: no corrupt packet copied
        for packet in c.demux(c.streams.video[0]):
            try:
                packet.decode()
            except av.error.FFmpegError:
                errors += 1
    assert errors == 0


def _bad_weights(d: Path, workdir: Path) -> Path:
    (d / "broken.json").write_text((workdir / "vcm.json").read_text())
    (d / "broken.safetensors").write_bytes(b"\x00" * 64)
    return d / "broken"


BAD = {
    "bad_weights": (
        lambda d, w: ["generate", w / "clip.mp4", "--model", _bad_weights(d, w)],
        "unreadable safetensors file",
    ),
    "no_model": (lambda d, w: ["generate", w / "clip.mp4", "--model", d / "none"], "checkpoint config not found"),
    "md5": (lambda d, w: ["weights", "verify", "vae_16k", "--dir", _md5_bad(d)], "does not match the expected"),
    "dims": (lambda d, w: ["generate", w / "clip.mp4", "--model", mismatched_model(d)], "does not fit the 'lite'"),
    "no_encoders": (lambda d, w: ["generate", w / "clip.mp4", "--model", _debug_model(d)], "unknown encoder set"),
    "cfg_consistency": (
        lambda d, w: ["generate", w / "clip.mp4", "--model", w / "vcm", "--cfg", "3"],
        "guidance is baked in by training",
    ),
    "cfg_t_max_consistency": (
        lambda d, w: ["generate", w / "clip.mp4", "--model", w / "vcm", "--cfg-t-max", "0.5"],
        "guidance is baked in by training",
    ),
    "negative_scale_euler": (
        lambda d, w: ["generate", w / "clip.mp4", "--model", w / "fm", "--negative-scale", "2"],
        "--negative-scale applies to the consistency sampler",
    ),
    "prompt_scale_range": (
        lambda d, w: ["generate", w / "clip.mp4", "--prompt", "rain", "--prompt-scale", "-1"],
        "prompt_scale must be in",
    ),
}


def _md5_bad(d: Path) -> Path:
    (d / "w").mkdir()
    (d / "w" / "v1-16.pth").write_bytes(b"truncated")
    return d / "w"


def _debug_model(d: Path) -> Path:
    code = main(["model", "init", "--preset", "debug", "--out", str(d / "dbg")])
    assert code == 0
    return d / "dbg"


@pytest.mark.parametrize("name", list(BAD))
def test_cli_bad_inputs_fail_cleanly(name, workdir, tmp_path, capsys, monkeypatch):
    make, message = BAD[name]
    case = tmp_path / "case"
    case.mkdir()
    args = make(case, workdir)
    if args[0] == "generate" and "--model" not in args:
        args += ["--model", workdir / "vcm"]
    out = tmp_path / "out"
    capsys.readouterr()
    code, _, err = _run([*args, "--out", out] if args[0] == "generate" else args, capsys)
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("soundvcm: error:"), err
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in err
    assert not out.exists() or list(out.iterdir()) == []


def test_registered_mmaudio_name_needs_its_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SOUNDVCM_WEIGHTS", str(tmp_path))
    code, _, err = _run(["generate", "--prompt", "rain", "--model", "mmaudio_small_16k"], capsys)
    assert (
        code == 2 and "mmaudio_small_16k.pth not found" in err and "soundvcm weights download mmaudio_small_16k" in err
    )


def test_cli_refuses_to_overwrite_the_input(workdir, tmp_path, capsys):
    video = make_video(tmp_path / "clip.mp4", duration=1.0)
    before = video.read_bytes()
    code, _, err = _run(["generate", video, "--model", workdir / "vcm", "--duration", "1", "--out", tmp_path], capsys)
    assert code == 2 and "would overwrite an input of this batch" in err
    assert video.read_bytes() == before and not (tmp_path / "clip.flac").exists()
