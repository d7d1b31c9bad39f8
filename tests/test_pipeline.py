"""The inference API and `soundvcm generate`: tiny random-initialised networks with the real lite
encoders, on media the tests make. Hard inputs must work; bad inputs must give one clear line,
a non-zero exit and no output files."""

from __future__ import annotations

import re
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import pytest
import torch

from media_factory import corrupt_middle, make_tone, make_video
from soundvcm.cli import main
from soundvcm.media import load_audio, probe, write_audio
from soundvcm.network.checkpoint import save_network
from soundvcm.network.mmdit import MMDiT
from soundvcm.pipeline import Pipeline
from soundvcm.spec import preset_for_encoders

SR = 22_050


def _model(path: Path, objective: str = "vcm", seed: int = 0) -> Path:
    config, encoder_set = preset_for_encoders("debug", "lite")
    torch.manual_seed(seed)
    net = MMDiT(config)
    with torch.no_grad():  # make the random net's output depend on its conditions
        for p in net.parameters():
            if p.requires_grad and p.abs().sum() == 0:
                p.normal_(0, 0.02)
    save_network(path, net, preset="debug", encoder_set=encoder_set, objective=objective)
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipeline")
    _model(d / "vcm")
    _model(d / "fm", objective="fm")
    make_video(d / "clip.mp4", duration=3.0, size=(96, 64), fps=24)
    return d


@pytest.fixture(scope="module")
def pipe(workdir):
    return Pipeline.load(workdir / "vcm")


def test_video_to_audio_is_seeded_and_sized(pipe, workdir):
    a = pipe.generate(video=workdir / "clip.mp4", duration=2.0, seed=1)
    b = pipe.generate(video=workdir / "clip.mp4", duration=2.0, seed=1)
    c = pipe.generate(video=workdir / "clip.mp4", duration=2.0, seed=2)
    assert a.sample_rate == SR and a.wave.shape == (2 * SR,) and a.nfe == 1
    assert torch.equal(a.wave, b.wave) and not torch.equal(a.wave, c.wave)
    assert a.wave.abs().max() <= 1
    assert {"decode", "visual", "sync", "network", "latent_decode", "vocoder"} <= set(a.timings)


def test_conditions_change_the_output(pipe, workdir):
    video = pipe.generate(video=workdir / "clip.mp4", duration=1.5, seed=3).wave
    text = pipe.generate(prompt="thunder", duration=1.5, seed=3).wave
    both = pipe.generate(video=workdir / "clip.mp4", prompt="thunder", duration=1.5, seed=3).wave
    assert not torch.allclose(video, text) and not torch.allclose(video, both)


def test_text_only_and_image_modes(pipe, tmp_path):
    r = pipe.generate(prompt="a dog barks", duration=1.25)
    assert r.wave.shape == (int(round(1.25 * SR)),)
    img = tmp_path / "still.png"
    with av.open(str(img), "w", format="image2") as c:
        s = c.add_stream("png", rate=1)
        s.width, s.height, s.pix_fmt = 32, 24, "rgb24"
        for p in s.encode(av.VideoFrame.from_ndarray(torch.full((24, 32, 3), 90, dtype=torch.uint8).numpy())):
            c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    assert pipe.generate(image=img, duration=1.0).wave.numel() == SR


def test_short_video_generates_its_real_length(pipe, tmp_path):
    short = make_video(tmp_path / "short.mp4", duration=1.2)
    r = pipe.generate(video=short, duration=8.0)
    assert r.truncated and r.duration == pytest.approx(1.2, abs=0.01)
    assert r.wave.numel() == int(round(r.duration * SR))
    assert any("instead of the requested" in w for w in r.warnings)


def test_samplers_and_negative_prompt_count_nfe(pipe, workdir):
    video = workdir / "clip.mp4"
    assert pipe.generate(video=video, duration=1.0, options=pipe.sampler(steps=4)).nfe == 4
    assert pipe.generate(video=video, duration=1.0, negative_prompt="music").nfe == 2
    assert pipe.generate(video=video, duration=1.0, options=pipe.sampler("euler", steps=3)).nfe == 6
    fm = Pipeline.load(workdir / "fm")
    assert (
        fm.default_sampler() == "euler" and fm.generate(video=video, duration=1.0, options=fm.sampler(steps=2)).nfe == 4
    )


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def test_long_video_in_windows(pipe, tmp_path):
    """Windows at 0, 1.5 and 3 s; away from the overlaps the stitched, once-vocoded soundtrack is
    each window's own generation (up to the peak limiter's gain)."""
    video = make_video(tmp_path / "long.mp4", duration=4.5, size=(64, 48))
    total = probe(video).duration
    r = pipe.generate_long(video, window=2.0, overlap=0.5, seed=7)
    assert abs(r.wave.numel() / SR - total) < 0.01
    # window i starts at its nearest mel frame (256 samples at 22.05 kHz: within 2.9 ms of i * 1.5 s)
    for i, (start, duration) in enumerate([(0.0, 2.0), (1.5, 2.0), (3.0, total - 3.0)]):
        own = pipe.generate(video=video, start=start, duration=duration, seed=7 + i).wave
        at = round(start * SR / 256) * 256
        lone = slice(int(0.7 * SR) if i else 0, int(1.2 * SR))  # away from the fades (receptive field aside)
        assert _corr(r.wave[at + lone.start : at + lone.stop], own[lone]) > 0.999, i


def test_stitch_mels_keeps_lone_frames_and_blends_overlaps():
    from soundvcm.media.mel import stitch_mels

    a, b = torch.full((4, 30), -2.0), torch.full((4, 30), -6.0)
    a[:, 0] = 1.0
    out = stitch_mels([(0, a), (20, b)], fade=10)
    assert out.shape == (1, 4, 50)
    assert torch.allclose(out[0, :, :20], a[:, :20]) and torch.allclose(out[0, :, 30:], b[:, 10:])
    mid = out[0, 0, 20:30].exp()  # linear magnitudes fade from a's to b's
    assert bool((mid[1:] < mid[:-1]).all()) and -2.0 > float(out[0, 0, 25]) > -6.0
    same = stitch_mels([(0, a[:, 1:]), (19, a[:, 1:])], fade=10)  # equal windows: unchanged
    assert torch.allclose(same[0], a[:, 1:].repeat(1, 2)[:, :48], atol=1e-5)


def _rms(x: torch.Tensor) -> float:
    return float(x.pow(2).mean().sqrt())


def test_vocoding_in_chunks_equals_one_pass(pipe):
    """Vocoding in windows with 16 frames of context (HiFi-GAN's receptive field; the lite set's
    bf16 path and the pipeline's outer chunks of long videos) gives the one-pass waveform.

    Tolerances follow from the arithmetic, not from one machine: in fp32 the windows see the same
    inputs as the one pass, so only the summation order differs (a few fp32 ulps per layer:
    1e-3 of the peak leaves ~20x margin on every CPU kind). In bf16 a window is a new input
    length, for which oneDNN may pick another kernel and summation order (AMX: bit-identical;
    AVX512_BF16 without AMX: not), and every layer rounds to 8 bits: so the chunked bf16 output
    must be as close to the one-pass bf16 output as two bf16 evaluations of one function can be,
    i.e. within twice the one pass's own bf16 error to the fp32 reference (triangle inequality)."""
    from soundvcm.encoders.base import autocast
    from soundvcm.encoders.hifigan import vocode_in_chunks

    enc = pipe.encoders
    g = torch.Generator().manual_seed(0)
    mel = torch.randn(1, 80, 600, generator=g) - 5
    voc = lambda m: enc.vocoder(m).float()  # noqa: E731
    with torch.inference_mode():
        reference = voc(mel)[0]  # fp32, one pass
        windows = vocode_in_chunks(voc, mel, 256, chunk=64)
        outer = vocode_in_chunks(voc, mel, 256, chunk=200, context=40)
        short = vocode_in_chunks(voc, mel, 256, chunk=100, context=1)
        with autocast(enc.device, enc.vocoder_dtype):  # the precision vocode uses (bf16 where auto chose it)
            whole = voc(mel)[0]
        chunked = enc.vocode(mel)[0]  # bf16: windows of 128 + 2 x 16 frames; fp32: one pass
        chunked_outer = vocode_in_chunks(enc.vocode, mel, 256, chunk=200, context=40)
    scale = float(reference.abs().max())
    assert chunked.shape == whole.shape == outer.shape == windows.shape == reference.shape
    # fp32: the chunking itself is exact up to summation order
    assert float((windows - reference).abs().max()) < 1e-3 * scale
    assert float((outer - reference).abs().max()) < 1e-3 * scale
    # too little context shows: the checks can fail (a ~100x larger error, far above either tolerance)
    assert float((short - reference).abs().max()) > 1e-2 * scale
    # the pipeline's precision: chunking adds no more than that precision's own rounding
    own_error = _rms(whole - reference)  # 0 in fp32; ~6 % of the rms for this random mel in bf16
    bound = 2 * own_error + 1e-4 * _rms(reference)
    assert _rms(chunked - whole) <= bound
    assert _rms(chunked_outer - whole) <= bound
    assert _rms(short - reference) > 2 * bound  # the control fails this bound too


def _mismatched_model(d: Path) -> Path:
    """A checkpoint that says 'lite' but whose network takes 512-d visual features."""
    config, _ = preset_for_encoders("debug", "lite")
    save_network(d / "mismatch", MMDiT(replace(config, clip_dim=512)), preset="debug", encoder_set="lite")
    return d / "mismatch"


def test_model_and_encoder_dimensions_must_agree(tmp_path):
    with pytest.raises(ValueError, match="does not fit the 'lite' encoder set: clip_dim 512 \\(encoders: 1280\\)"):
        Pipeline.load(_mismatched_model(tmp_path))


# ----- CLI ---------------------------------------------------------------------------------
def _run(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


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
    "dims": (lambda d, w: ["generate", w / "clip.mp4", "--model", _mismatched_model(d)], "does not fit the 'lite'"),
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
}


def _mkdir(p: Path) -> Path:
    p.mkdir()
    return p


def _write(p: Path, data: bytes) -> Path:
    p.write_bytes(data)
    return p


def _tone(p: Path) -> Path:
    write_audio(p, make_tone(16_000, 1.0), 16_000)
    return p


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
    "not_media": (lambda d: _write(d / "n.mp4", b"hello\n" * 100), "n.mp4: not a readable media file"),
    "audio_only": (lambda d: _tone(d / "a.flac"), "a.flac: no video stream"),
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
    "empty": (lambda d: _write(d / "e.mp4", b""), "e.mp4: empty file"),
    "not_media": (lambda d: _write(d / "n.mp4", b"hello\n" * 100), "n.mp4: not a readable media file"),
    "truncated": (
        lambda d: _write(d / "t.mp4", make_video(d / "full.mp4", duration=2.0).read_bytes()[:300]),
        "t.mp4: (not a readable media file|no video frame)",
    ),
    "audio_only": (lambda d: _tone(d / "a.flac"), "a.flac: no video stream"),
    "too_short": (lambda d: make_video(d / "blip.mp4", duration=0.4), "blip.mp4: too short"),
    "no_video_files": (lambda d: _mkdir(d / "empty_dir"), "empty_dir: a directory with no video files"),
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
