"""Media I/O on clips the tests make: frame selection by timestamp, hard inputs, bad inputs,
audio resampling, mel parity with MMAudio's converter, atomic writers and muxing."""

from __future__ import annotations

import math
import warnings
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from media_factory import (
    corrupt_middle,
    frame_value,
    make_tone,
    make_video,
)
from soundvcm.media import (
    MEL_16K,
    MEL_44K,
    MEL_HIFIGAN,
    FrameSpec,
    MediaError,
    load_audio,
    load_image,
    load_video,
    mel_spectrogram,
    probe,
    resample,
    write_audio,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SPECS = {"clip": FrameSpec(8, 32, 32), "sync": FrameSpec(25, 16, 16, fit="crop", gray=True)}


def _brightness(frames: torch.Tensor) -> np.ndarray:
    """Mean of the bottom-right quadrant (away from the orientation marker) per frame."""
    h, w = frames.shape[-2:]
    return frames[:, 0, h // 2 :, w // 2 :].float().mean(dim=(-2, -1)).numpy()


def _nearest_values(source_times: list[float], fps: float, n: int, duration: float) -> np.ndarray:
    """Nearest source frame per target time; an exact tie goes to the later frame."""
    src = np.asarray(source_times)
    picks = []
    for k in range(n):
        dist = np.abs(src - k / fps)
        picks.append(src[dist <= dist.min() + 1e-9].max())
    return np.array([frame_value(t, duration) for t in picks], dtype=float)


@pytest.mark.parametrize("fps", [5, 25, 120, 29.97])
def test_frames_follow_timestamps(tmp_path, fps, monkeypatch):
    """Each target frame is the source frame nearest in time: low fps repeats, high fps drops,
    non-integer fps needs no special case. A repeated frame is scaled once per spec."""
    import soundvcm.media.video as video

    duration = 2.0
    path = make_video(tmp_path / "v.mp4", duration=duration, fps=Fraction(fps).limit_denominator(1001))
    converted = []
    convert = video._convert
    monkeypatch.setattr(video, "_convert", lambda *a: converted.append(a[1]) or convert(*a))
    clip = load_video(path, SPECS, duration=duration)
    assert len(converted) <= sum(min(len(clip.frames[k]), math.ceil(duration * fps) + 1) for k in SPECS)
    assert clip.frames["clip"].shape == (16, 3, 32, 32)
    assert clip.frames["sync"].shape == (50, 1, 16, 16)
    n_src = int(math.floor(duration * fps + 1e-9))
    times = [i / fps for i in range(n_src)]
    expected = _nearest_values(times, 8, 16, duration)
    got = _brightness(clip.frames["clip"])
    # encoding noise is a few levels; a one-frame error at 5 fps would be 22 levels
    step = 219 / (duration * fps)
    assert np.abs(got - expected).max() <= max(4.0, 0.5 * step)
    if fps == 5:  # frame repetition: 8 targets per second from 5 sources
        assert len(np.unique(np.round(got / 10))) < 16


def test_variable_frame_rate(tmp_path):
    times = [0.0, 0.03, 0.1, 0.5, 0.52, 0.9, 1.5, 1.9]
    path = make_video(tmp_path / "vfr.mp4", duration=2.0, frame_times=times)
    clip = load_video(path, SPECS, duration=1.75)
    got = _brightness(clip.frames["clip"])
    expected = _nearest_values(times, 8, 14, 2.0)
    assert np.abs(got - expected).max() <= 5


def test_rotation_metadata_is_applied(tmp_path):
    path = make_video(tmp_path / "rot.mp4", size=(64, 48), rotation=90)
    info = probe(path)
    assert (info.width, info.height, info.rotation) == (48, 64, 90)
    spec = {"full": FrameSpec(8, 64, 48)}  # displayed aspect (portrait)
    frame = load_video(path, spec, duration=1.0).frames["full"][0, 0].float()
    # the marker (top-left of the stored picture) is bottom-left after a 90 deg CCW rotation
    h, w = frame.shape
    corners = {
        "tl": frame[: h // 8, : w // 8].mean(),
        "bl": frame[-h // 8 :, : w // 8].mean(),
        "tr": frame[: h // 8, -w // 8 :].mean(),
        "br": frame[-h // 8 :, -w // 8 :].mean(),
    }
    assert max(corners, key=corners.get) == "bl"


def test_odd_sizes_grayscale_and_crop(tmp_path):
    path = make_video(tmp_path / "odd.mp4", size=(63, 47), codec="mpeg4", gray=True)
    spec = {"crop": FrameSpec(25, 20, 20, fit="crop"), "squash": FrameSpec(8, 30, 40)}
    clip = load_video(path, spec, duration=1.0)
    assert clip.frames["crop"].shape == (25, 3, 20, 20)
    assert clip.frames["squash"].shape == (8, 3, 30, 40)
    rgb = clip.frames["squash"].float()
    assert (rgb[:, 0] - rgb[:, 1]).abs().mean() < 2  # grey stays grey


@pytest.mark.slow
def test_4k_input_is_resized_while_decoding(tmp_path):
    path = make_video(tmp_path / "4k.mp4", size=(3840, 2160), fps=5, duration=1.0, audio_rate=None)
    clip = load_video(path, SPECS, duration=1.0)
    assert clip.info.width == 3840 and clip.frames["clip"].shape == (8, 3, 32, 32)


def test_short_video_is_truncated_and_flagged(tmp_path):
    path = make_video(tmp_path / "short.mp4", duration=1.0)
    with pytest.warns(UserWarning, match="shorter than the requested"):
        clip = load_video(path, SPECS, duration=3.0)
    assert clip.truncated and clip.duration == pytest.approx(1.0)


def test_video_without_audio(tmp_path):
    path = make_video(tmp_path / "silent.mp4", audio_rate=None)
    assert not probe(path).has_audio
    assert load_video(path, SPECS, duration=1.0).frames["clip"].shape[0] == 8
    with pytest.raises(MediaError, match="no audio stream"):
        load_audio(path)


def test_corrupt_packets_are_skipped(tmp_path):
    good = make_video(tmp_path / "good.mp4", duration=4.0, size=(160, 120), audio_rate=None)
    bad = corrupt_middle(good, tmp_path / "bad.mp4", fraction=0.5, length=2000)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        clip = load_video(bad, SPECS, duration=3.0)
    assert clip.frames["clip"].shape[0] >= 8  # most of the clip still decodes


def test_start_offset(tmp_path):
    path = make_video(tmp_path / "v.mp4", duration=3.0, fps=25)
    clip = load_video(path, SPECS, duration=1.0, start=1.5)
    got = _brightness(clip.frames["clip"])
    expected = [frame_value(1.5 + k / 8, 3.0) for k in range(8)]
    assert np.abs(got - np.asarray(expected)).max() <= 4


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.mp4", "no such file"),
        (lambda d: d, "is a directory"),
        (lambda d: _write(d / "empty.mp4", b""), "empty file"),
        (lambda d: _write(d / "notes.mp4", b"this is not a video\n" * 50), "not a readable media file"),
        (lambda d: _truncated(d), "not a readable media file|no video frame"),
        (lambda d: _audio_only(d), "no video stream"),
    ],
)
def test_bad_inputs_raise_media_error(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(MediaError, match=message):
        load_video(path, SPECS, duration=1.0)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _truncated(d: Path) -> Path:
    full = make_video(d / "full.mp4", duration=1.0)
    return _write(d / "truncated.mp4", full.read_bytes()[:200])


def _audio_only(d: Path) -> Path:
    path = d / "tone.flac"
    write_audio(path, make_tone(16_000, 1.0), 16_000)
    return path


def test_image_loading(tmp_path):
    img = np.zeros((40, 60, 3), dtype=np.uint8)
    img[:, :30] = 200
    path = tmp_path / "still.png"
    _save_png(path, img)
    frames = load_image(path, {"clip": FrameSpec(8, 20, 30)})["clip"]
    assert frames.shape == (1, 3, 20, 30)
    assert frames[0, 0, :, :10].float().mean() > 150 and frames[0, 0, :, -10:].float().mean() < 50


def _save_png(path: Path, img: np.ndarray) -> None:
    with av.open(str(path), "w", format="image2") as c:
        s = c.add_stream("png", rate=1)
        s.width, s.height, s.pix_fmt = img.shape[1], img.shape[0], "rgb24"
        for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            c.mux(p)
        for p in s.encode(None):
            c.mux(p)


# ----- audio -------------------------------------------------------------------------------
def test_resample_keeps_pitch_and_length():
    sr_in, sr_out = 16_000, 22_050
    tone = torch.from_numpy(make_tone(sr_in, 1.0, freq=1000.0))
    out = resample(tone, sr_in, sr_out)
    assert out.numel() == sr_out
    spectrum = torch.fft.rfft(out * torch.hann_window(out.numel()))
    peak = spectrum.abs().argmax().item() * sr_out / out.numel()
    assert abs(peak - 1000.0) < 2.0
    assert out.abs().max() == pytest.approx(0.4, abs=0.02)


def test_resample_is_band_limited():
    """A 10 kHz tone at 44.1 kHz vanishes when resampled to 16 kHz (Nyquist 8 kHz)."""
    tone = torch.from_numpy(make_tone(44_100, 1.0, freq=10_000.0))
    out = resample(tone, 44_100, 16_000)
    assert out[1000:-1000].abs().max() < 1e-3


def test_audio_roundtrip_flac_and_wav(tmp_path):
    wave = torch.from_numpy(make_tone(22_050, 0.5))
    for suffix in (".flac", ".wav"):
        path = write_audio(tmp_path / f"a{suffix}", wave, 22_050)
        back, sr = load_audio(path)
        assert sr == 22_050 and back.shape == wave.shape
        assert (back - wave).abs().max() < 1e-3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.flac", "a.wav"]  # no temporary files


def test_load_audio_from_video_resamples(tmp_path):
    path = make_video(tmp_path / "v.mp4", duration=2.0, audio_rate=16_000)
    wave, sr = load_audio(path, sample_rate=22_050, duration=1.0)
    assert sr == 22_050 and wave.numel() == 22_050


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="unsupported audio suffix"):
        write_audio(tmp_path / "x.mp3", torch.zeros(100), 16_000)
    with pytest.raises(Exception):  # noqa: B017 (soundfile's own error type)
        write_audio(tmp_path / "y.flac", torch.zeros(100), 0)  # invalid sample rate
    assert list(tmp_path.iterdir()) == []


# ----- mel ---------------------------------------------------------------------------------
def _reference_signal(sr: int, seconds: float) -> torch.Tensor:
    """The signal of tests/fixtures/make_mel_fixture.py.txt."""
    t = torch.arange(int(sr * seconds), dtype=torch.float64) / sr
    chirp = torch.sin(2 * math.pi * (100 * t + (6000 - 100) / (2 * seconds) * t**2))
    tone = 0.3 * torch.sin(2 * math.pi * 440 * t)
    clicks = ((torch.arange(t.numel()) % (sr // 10)) == 0).double() * 0.8
    return (0.5 * chirp + tone + clicks).clamp(-1, 1).float()


@pytest.mark.parametrize(
    "key, config, seconds", [("mel_16k", MEL_16K, 0.5), ("mel_44k", MEL_44K, 0.25), ("mel_hifigan", MEL_HIFIGAN, 0.4)]
)
def test_mel_matches_mmaudio_converter(key, config, seconds):
    reference = load_file(FIXTURES / "mel_reference.safetensors")[key]
    ours = mel_spectrogram(_reference_signal(config.sample_rate, seconds), config)
    assert ours.shape == reference.shape
    # Bins near the clip floor (energy ~1e-5) are fp32 FFT rounding, which differs between CPUs
    # (up to 5e-3 in log units on one AVX512 machine against the fixture's): so the log values are
    # compared tightly within 60 dB of the peak, and every bin in linear magnitude, against the peak.
    linear = (lambda m: 10**m) if config.log == "log10" else torch.exp
    peak = linear(reference).max()
    loud = linear(reference) > 1e-3 * peak
    assert loud.float().mean() > 0.4
    assert (ours - reference).abs()[loud].max() < 1e-4
    assert (linear(ours) - linear(reference)).abs().max() < 1e-5 * peak
    assert ours.shape[-1] == config.num_frames(int(config.sample_rate * seconds))


def test_mel_of_a_tone_peaks_in_its_band():
    tone = torch.from_numpy(make_tone(22_050, 0.5, freq=2000.0))
    mel = mel_spectrogram(tone, MEL_HIFIGAN)
    from soundvcm.media.mel import _hz_to_mel

    band = mel.mean(-1).argmax().item()
    edges = torch.linspace(0, _hz_to_mel(torch.tensor(8000.0)).item(), 82)
    centre = _hz_to_mel(torch.tensor(2000.0)).item()
    assert edges[band] <= centre <= edges[band + 2]
