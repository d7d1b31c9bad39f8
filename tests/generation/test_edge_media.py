"""Batch safety, fail-fast and the edge-media corpus through `soundvcm generate`: every case ends in exit
0 with correct outputs, or exit 2 with one line naming the file; never a partial output."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import av
import pytest
import torch

from media_factory import corrupt_middle, make_dir, make_video, tone_file, write_bytes
from model_factory import debug_model, run_cli
from soundvcm.cli import main
from soundvcm.media import load_audio, probe
from soundvcm.network.checkpoint import save_network
from soundvcm.network.mmdit import MMDiT
from soundvcm.pipeline import Pipeline
from soundvcm.spec import preset_for_encoders

SR = 22_050
_model = debug_model
_run = run_cli


# ----- batch safety and fail-fast (issue 10) -------------------------------------------------
def _no_load(monkeypatch):
    """Make loading a model an error, to prove that checks run before it."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(Pipeline, "load", classmethod(refuse))


def test_batch_never_writes_over_an_input(workdir, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "videos"
    make_video(folder / "clip.avi", duration=1.0, codec="mpeg4", audio_rate=None)
    make_video(folder / "clip.mp4", duration=1.0)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    _no_load(monkeypatch)
    code, _, err = _run(["generate", folder, "--model", workdir / "vcm", "--duration", "1", "--out", folder], capsys)
    assert code == 2 and "clip.mp4: the output would overwrite an input of this batch" in err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_batch_names_are_unique_and_outputs_are_never_replaced_silently(workdir, tmp_path, capsys):
    folder = tmp_path / "videos"
    make_video(folder / "a.mp4", duration=1.0)
    make_video(folder / "a.mov", duration=1.0)
    out = tmp_path / "out"
    args = ["generate", folder, "--model", workdir / "vcm", "--duration", "1", "--out", out]
    code, stdout, _ = _run(args, capsys)
    assert code == 0 and sorted(p.name for p in out.iterdir()) == ["a.flac", "a.mp4", "a_2.flac", "a_2.mp4"]
    # the log says which input went where: input -> outputs
    assert f"{folder / 'a.mov'} -> {out / 'a.flac'}, {out / 'a.mp4'}" in stdout
    assert f"{folder / 'a.mp4'} -> {out / 'a_2.flac'}, {out / 'a_2.mp4'}" in stdout
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    code, _, err = _run(args, capsys)  # a second run refuses to replace them
    assert code == 2 and "already exist" in err and "--overwrite" in err and "--skip-existing" in err
    (out / "a_2.mp4").unlink()  # an interrupted batch: a_2 is not complete
    code, stdout, _ = _run([*args, "--skip-existing"], capsys)
    assert code == 0 and (out / "a_2.mp4").is_file()
    assert (out / "a.flac").stat().st_mtime_ns == stamps["a.flac"]  # finished jobs are left alone
    code, stdout, _ = _run([*args, "--skip-existing"], capsys)
    assert code == 0 and "nothing to do" in stdout
    code, _, _ = _run([*args, "--overwrite"], capsys)
    assert code == 0 and (out / "a.flac").stat().st_mtime_ns != stamps["a.flac"]


FAIL_FAST = {
    "missing": (lambda d: d / "nope.mp4", "nope.mp4: no such file"),
    "not_media": (lambda d: write_bytes(d / "n.mp4", b"hello\n" * 100), "n.mp4: not a readable media file"),
    "audio_only": (lambda d: tone_file(d / "a.flac"), "a.flac: no video stream"),
    "too_short": (lambda d: make_video(d / "short.mp4", duration=0.4), "short.mp4: too short: 0.40 s"),
}


@pytest.mark.parametrize("name", list(FAIL_FAST))
def test_bad_inputs_fail_before_any_model_loads(name, workdir, tmp_path, capsys, monkeypatch):
    make, message = FAIL_FAST[name]
    video = make(tmp_path)
    _no_load(monkeypatch)
    code, _, err = _run(["generate", video, "--model", workdir / "vcm", "--out", tmp_path / "out"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "out").exists()


def test_output_folder_that_is_a_file(workdir, tmp_path, capsys, monkeypatch):
    (tmp_path / "out").write_text("a file")
    _no_load(monkeypatch)
    code, _, err = _run(
        ["generate", workdir / "clip.mp4", "--model", workdir / "vcm", "--out", tmp_path / "out"], capsys
    )
    assert (
        code == 2
        and err.strip() == f"soundvcm: error: {tmp_path / 'out'}: the output folder is a file; choose another --out"
    )


def test_a_longer_clip_says_what_was_left_out(workdir, tmp_path, capsys):
    code, _, err = _run(
        ["generate", workdir / "clip.mp4", "--model", workdir / "vcm", "--duration", "1", "--out", tmp_path], capsys
    )
    assert code == 0 and "only 1 s from 0 s of the 3.00 s video were used (--duration); leave it out" in err


@pytest.mark.parametrize("steps", ["0", "-1", "two"])
def test_steps_must_be_positive(workdir, steps, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["generate", str(workdir / "clip.mp4"), "--model", str(workdir / "vcm"), "--steps", steps])
    assert exc.value.code == 2 and "--steps" in capsys.readouterr().err


def test_loud_untrained_model_is_limited_and_flagged(tmp_path, capsys):
    config, encoder_set = preset_for_encoders("debug", "lite")
    torch.manual_seed(0)
    net = MMDiT(config)
    with torch.no_grad():  # a network whose output is far too loud
        for p in net.parameters():
            if p.requires_grad and p.abs().sum() == 0:
                p.normal_(0, 0.02)
        net.final_layer.conv.weight.mul_(1000)
    save_network(tmp_path / "loud", net, preset="debug", encoder_set=encoder_set, objective="vcm",
                 provenance={"kind": "random-init", "seed": 0})  # fmt: skip
    video = make_video(tmp_path / "clip.mp4", duration=1.0)
    out = tmp_path / "out"
    code, _, err = _run(["generate", video, "--model", tmp_path / "loud", "--duration", "1", "--out", out], capsys)
    assert code == 0 and err.count("never trained") == 1
    wave, _ = load_audio(out / "clip.flac")
    ceiling = 10 ** (-1 / 20)
    assert 0.5 * ceiling < wave.abs().max() <= ceiling + 1e-4  # limited, not clipped
    with av.open(str(out / "clip.mp4")) as c:
        aac = torch.cat([torch.from_numpy(f.to_ndarray()).flatten() for f in c.decode(c.streams.audio[0])])
    assert aac.abs().max() <= 1.0


# ----- the edge-media corpus: every case ends in exit 0 with correct outputs, or exit 2 with one line
# naming the file; never a partial output, never a changed input ------------------------------------
def _counter(d: Path, name: str, times: list[float], **kw) -> Path:
    from media_factory import make_counter_video

    return make_counter_video(d / name, times, **kw)


def _edit_listed(d: Path) -> Path:
    from media_factory import edit_list_copy

    src = _counter(d, "src_for_cut.mp4", [i / 25 for i in range(75)], audio_rate=None)
    out = edit_list_copy(src, d / "cut.mp4", 1.04)
    src.unlink()
    return out


def _offset_start(d: Path) -> Path:
    """A stream whose first timestamp is 2 s (as cut or streamed files often have)."""
    return make_video(d / "offset.mp4", frame_times=[2.0 + i / 25 for i in range(40)], duration=3.6)


def _fr(x) -> Fraction:
    return Fraction(x).limit_denominator(1001)


CORPUS = {
    # exit 0: hard but usable media
    "4k": (lambda d: make_video(d / "4k.mp4", size=(3840, 2160), fps=2, duration=1.0), None),
    "5fps": (lambda d: make_video(d / "5fps.mp4", fps=5, duration=2.0), None),
    "120fps": (lambda d: make_video(d / "120fps.mp4", fps=120, duration=2.0), None),
    "29.97fps": (lambda d: make_video(d / "ntsc.mp4", fps=_fr(29.97), duration=2.0), None),
    "23.976fps": (lambda d: make_video(d / "film.mp4", fps=_fr(23.976), duration=2.0), None),
    "vfr": (lambda d: make_video(d / "vfr.mp4", frame_times=[0, 0.05, 0.3, 0.31, 0.9, 1.2, 1.25, 1.9]), None),
    "odd_gray_mpeg4": (lambda d: make_video(d / "odd.mp4", size=(63, 47), codec="mpeg4", gray=True), None),
    "rotated_90": (lambda d: make_video(d / "rot90.mp4", rotation=90), None),
    "rotated_-90": (lambda d: make_video(d / "rot270.mp4", rotation=-90), None),
    "rotated_180": (lambda d: make_video(d / "rot180.mp4", rotation=180), None),
    "no_audio": (lambda d: make_video(d / "silent.mp4", audio_rate=None), None),
    "webm_vp9": (lambda d: make_video(d / "clip.webm", codec="libvpx-vp9", audio_rate=None), None),
    "mkv": (lambda d: make_video(d / "clip.mkv"), None),
    "mov": (lambda d: make_video(d / "clip.mov"), None),
    "avi_mjpeg": (lambda d: make_video(d / "mj.avi", codec="mjpeg", audio_rate=None), None),
    "avi_mpeg4": (lambda d: make_video(d / "m4.avi", codec="mpeg4", audio_rate=None), None),
    "hevc": (lambda d: make_video(d / "hevc.mp4", codec="libx265", audio_rate=None), None),
    "tiny_16x16": (lambda d: make_video(d / "tiny.mp4", size=(16, 16)), None),
    "portrait": (lambda d: make_video(d / "portrait.mp4", size=(48, 96)), None),
    "b_frames": (lambda d: _counter(d, "bframes.mp4", [i / 25 for i in range(50)]), None),
    "edit_list": (_edit_listed, None),
    "offset_start": (_offset_start, None),
    "just_long_enough": (lambda d: make_video(d / "short_ok.mp4", duration=0.7), None),
    "longer_than_duration": (lambda d: make_video(d / "long.mp4", duration=4.0), None),
    "corrupt_middle": (
        lambda d: corrupt_middle(
            make_video(d / "good.mp4", duration=4.0, size=(160, 120), audio_rate=None),
            d / "corrupt.mp4",
            fraction=0.5,
            length=2000,
        ),
        None,
    ),  # fmt: skip
    # exit 2: unusable media, one line naming the file
    "missing": (lambda d: d / "nope.mp4", "nope.mp4: no such file"),
    "empty": (lambda d: write_bytes(d / "e.mp4", b""), "e.mp4: empty file"),
    "not_media": (lambda d: write_bytes(d / "n.mp4", b"hello\n" * 100), "n.mp4: not a readable media file"),
    "truncated": (
        lambda d: write_bytes(d / "t.mp4", make_video(d / "full.mp4", duration=2.0).read_bytes()[:300]),
        "t.mp4: (not a readable media file|no video frame)",
    ),
    "audio_only": (lambda d: tone_file(d / "a.flac"), "a.flac: no video stream"),
    "too_short": (lambda d: make_video(d / "blip.mp4", duration=0.4), "blip.mp4: too short"),
    "no_video_files": (lambda d: make_dir(d / "empty_dir"), "empty_dir: a directory with no video files"),
}


@pytest.mark.parametrize("name", list(CORPUS))
def test_edge_media_corpus(name, workdir, tmp_path, capsys):
    make, failure = CORPUS[name]
    media = tmp_path / "media"
    media.mkdir()
    video = make(media)
    before = {p.name: p.read_bytes() for p in media.rglob("*") if p.is_file()}
    out = tmp_path / "out"
    code, _, err = _run(["generate", video, "--model", workdir / "vcm", "--duration", "1", "--out", out], capsys)
    after = {p.name: p.read_bytes() for p in media.rglob("*") if p.is_file()}
    assert after == before  # inputs untouched
    produced = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert not [p for p in produced if p.startswith(".")]  # no temporary or partial file
    if failure is None:
        assert code == 0, err
        assert produced == [f"{video.stem}.flac", f"{video.stem}.mp4"]
        wave, sr = load_audio(out / f"{video.stem}.flac")
        info = probe(out / f"{video.stem}.mp4")
        assert info.has_audio and 0.6 <= wave.numel() / sr <= 1.0 + 1e-3
    else:
        lines = [ln for ln in err.strip().splitlines() if ln]
        assert code == 2 and len(lines) == 1 and lines[0].startswith("soundvcm: error:"), err
        assert re.search(failure, lines[0]), lines[0]
        assert produced == [] and "Traceback" not in err


def test_corpus_cases_are_what_their_names_say(tmp_path):
    """The usable entries are distinct media (no two probe alike: container, codec, size, rate,
    rotation, audio, start, length), and the named properties hold where probing can see them."""
    seen = {}
    for name, (make, failure) in CORPUS.items():
        if failure is not None:
            continue
        folder = tmp_path / name
        folder.mkdir()
        video = make(folder)
        info = probe(video)
        key = (video.suffix, info.codec, info.width, info.height, round(info.fps, 2), info.rotation)
        key += (info.has_audio, round(info.first_time, 2), round(info.duration, 1), name == "corrupt_middle")
        assert key not in seen, f"{name} probes like {seen.get(key)}: {key}"
        seen[key] = name
    by_name = {v: k for k, v in seen.items()}
    assert by_name["4k"][2:4] == (3840, 2160) and by_name["portrait"][2:4] == (48, 96)
    assert by_name["hevc"][1] == "hevc" and by_name["webm_vp9"][1] == "vp9" and by_name["avi_mjpeg"][1] == "mjpeg"
    assert by_name["rotated_90"][2:4] == (48, 64) and by_name["rotated_90"][5] == 90  # displayed portrait
    assert by_name["rotated_180"][2:4] == (64, 48) and abs(by_name["rotated_180"][5]) == 180
    assert by_name["offset_start"][7] == pytest.approx(2.0) and not by_name["no_audio"][6]
    assert by_name["5fps"][4] == 5 and by_name["120fps"][4] == 120 and by_name["29.97fps"][4] == 29.97
    assert len(seen) >= 25 and len(CORPUS) - len(seen) >= 7  # the issue-10 sweep: 25 usable, 7 unusable


def test_by_default_the_whole_video_is_generated_in_windows_of_the_trained_length(workdir, tmp_path, capsys):
    """Issue 35: `generate clip.mp4` covers the whole clip (here 3 s in windows of the debug net's 1 s,
    the tail included); --duration cuts it and says what was left out."""
    import soundfile as sf

    code, _, err = _run(["generate", workdir / "clip.mp4", "--model", workdir / "vcm", "--out", tmp_path], capsys)
    assert code == 0 and "were used" not in err
    assert sf.info(str(tmp_path / "clip.flac")).duration == pytest.approx(3.0, abs=0.01)
    with av.open(str(tmp_path / "clip.mp4")) as c:
        assert c.duration / 1e6 == pytest.approx(3.0, abs=0.05)
    cut = tmp_path / "cut"
    argv = ["generate", workdir / "clip.mp4", "--model", workdir / "vcm", "--duration", "1.5", "--start", "1"]
    code, _, err = _run([*argv, "--out", cut], capsys)
    assert code == 0 and "only 1.5 s from 1 s of the 3.00 s video were used (--duration)" in err
    assert sf.info(str(cut / "clip.flac")).duration == pytest.approx(1.5, abs=0.01)


def test_bench_vocoder_times_each_vocoder_and_setting_in_its_own_process(tmp_path, capsys):
    import json
    from dataclasses import asdict

    from soundvcm.atomic import save_tensors
    from soundvcm.training.vocoder import StudentShape

    shape = StudentShape(channels=16, resblock_kernels=(3,))  # a tiny student's export stem
    save_tensors(tmp_path / "s.safetensors", {k: v.half() for k, v in shape.build().state_dict().items()})
    (tmp_path / "s.json").write_text(json.dumps({"shape": asdict(shape)}))
    argv = ["bench", "vocoder", "--frames", "100", "--windows", "0,32", "--precision", "fp32"]
    code, out, _ = _run([*argv, "--vocoders", f"hifigan,{tmp_path / 's'}"], capsys)
    assert code == 0 and "capability" in out
    rows = [ln.strip("|").split("|") for ln in out.splitlines() if "| one pass" in ln or "| windows of 32" in ln]
    assert [r[0].strip() for r in rows] == ["hifigan", "hifigan", str(tmp_path / "s"), str(tmp_path / "s")]
    assert all(r[2].strip() == "fp32" and float(r[3]) > 0 and float(r[4]) > 0 for r in rows)
    code, _, err = _run(["bench", "vocoder", "--windows", "-5"], capsys)
    assert code == 2 and "--windows are frame counts" in err
