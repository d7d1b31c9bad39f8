"""The inference API and `soundvcm generate`: tiny random-initialised networks with the real lite
encoders, on media the tests make. Hard inputs must work; bad inputs must give one clear line,
a non-zero exit and no output files."""

from __future__ import annotations

import av
import pytest
import torch

from media_factory import make_video
from model_factory import debug_model, mismatched_model, run_cli
from soundvcm.media import probe
from soundvcm.pipeline import Pipeline

SR = 22_050


_model = debug_model
_run = run_cli


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
            in_windows = vocode_in_chunks(voc, mel, 256, chunk=128)  # vocode's bf16 path on AMX, on every CPU
        chunked = enc.vocode(mel)[0]  # bf16 on AMX: windows of 128 + 2 x 16 frames; else one pass
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
    assert _rms(chunked - whole) <= bound and _rms(in_windows - whole) <= bound
    assert _rms(chunked_outer - whole) <= bound
    assert _rms(short - reference) > 2 * bound  # the control fails this bound too


def test_model_and_encoder_dimensions_must_agree(tmp_path):
    with pytest.raises(ValueError, match="does not fit the 'lite' encoder set: clip_dim 512 \\(encoders: 1280\\)"):
        Pipeline.load(mismatched_model(tmp_path))
