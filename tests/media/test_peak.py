"""True-peak limiting and the AAC track's ceiling (issue 35: the decoded mp4 sound above full scale).

Known answers: a sine sampled at fs/4 with phase pi/4 has samples at +-0.707 but a true peak of
1; a slow sine's true peak is its sample peak; the 4x interpolator's passband is flat to within
1 % below 8 kHz at 22.05 kHz (its design, a 12-tap-per-phase windowed sinc, as BS.1770 uses)."""

from __future__ import annotations

import math

import av
import pytest
import torch

from media_factory import make_video
from soundvcm.media import mux as mux_module
from soundvcm.media.audio import PEAK_DBFS, limit_peak, true_peak
from soundvcm.media.errors import MediaError
from soundvcm.media.mux import AAC_CEILING, aac_peak, mux_audio

SR = 22_050


def _faded_sine(freq: float, phase: float, seconds: float = 0.5, sr: int = SR) -> torch.Tensor:
    """A sine under a Hann envelope: no hard edges, true peak ~1 at the middle."""
    t = torch.arange(int(seconds * sr), dtype=torch.float64)
    envelope = torch.sin(math.pi * t / t.numel()).pow(2)
    return (envelope * torch.sin(2 * math.pi * freq * t / sr + phase)).float()


def test_true_peak_finds_the_peak_between_samples():
    t = torch.arange(8000, dtype=torch.float64)
    quarter = torch.sin(math.pi / 2 * t + math.pi / 4) * torch.sin(math.pi * t / t.numel()).pow(2)
    assert float(quarter.abs().max()) < 0.71
    assert true_peak(quarter.float()) == pytest.approx(1.0, abs=0.015)  # +3 dB over the sample peak
    for freq in (100.0, 1000.0, 5000.0, 8000.0):
        for phase in (0.1, 0.7, 2.0):
            wave = _faded_sine(freq, phase)
            assert true_peak(wave) == pytest.approx(1.0, abs=0.01), (freq, phase)
    impulse = torch.zeros(1000)
    impulse[500] = -0.5
    assert true_peak(impulse) == pytest.approx(0.5, abs=1e-6)
    assert true_peak(torch.zeros(10)) == 0.0 and true_peak(torch.zeros(0)) == 0.0


def test_true_peak_is_the_same_in_blocks():
    g = torch.Generator().manual_seed(0)
    wave = torch.randn(50_000, generator=g).clamp(-3, 3) / 3
    assert true_peak(wave, block=1 << 20) == pytest.approx(true_peak(wave, block=777), abs=1e-6)


def test_limit_peak_holds_the_true_peak():
    ceiling = 10 ** (PEAK_DBFS / 20)
    t = torch.arange(8000, dtype=torch.float64)
    quarter = (0.85 * torch.sin(math.pi / 2 * t + math.pi / 4)).float()  # samples 0.60, true peak 0.85
    out, gain = limit_peak(quarter)
    assert gain == 1.0 and out is quarter  # 0.85 < 0.891: left alone
    loud = quarter / 0.6  # samples at 1.0 (not above full scale), true peak ~1.41
    out, gain = limit_peak(loud)
    assert gain < 0.75 and true_peak(out) <= ceiling + 1e-4
    quiet = 0.1 * _faded_sine(440.0, 0.3)
    assert limit_peak(quiet)[1] == 1.0
    with pytest.raises(ValueError, match="NaN"):
        limit_peak(torch.tensor([0.0, float("nan")]))


def _square(freq: float, seconds: float = 1.0) -> torch.Tensor:
    t = torch.arange(int(seconds * SR))
    return torch.sign(torch.sin(2 * math.pi * freq * t / SR)).float()


@pytest.mark.parametrize("freq", [40.0, 440.0, 3000.0])
def test_aac_track_of_a_limited_square_wave_stays_below_the_ceiling(tmp_path, freq):
    """The worst case for AAC's overshoot: a full-scale square wave, limited, muxed and decoded."""
    video = make_video(tmp_path / "clip.mp4", duration=1.0, audio_rate=None, size=(64, 48))
    wave, _ = limit_peak(_square(freq))
    out = mux_audio(video, wave, SR, tmp_path / "out.mp4")
    with av.open(str(out)) as c:
        decoded = max(float(abs(f.to_ndarray()).max()) for f in c.decode(c.streams.audio[0]))
    assert decoded <= AAC_CEILING <= 1.0


def test_mux_encodes_again_until_the_decoded_track_is_below_the_ceiling(tmp_path, monkeypatch):
    """An encoder whose overshoot does not shrink in proportion to the gain: the old loop (three
    tries, the same ratio each time) wrote a track above full scale; now every retry is quieter by
    more than the measured ratio, and a track that never comes down is an error, never a file."""
    video = make_video(tmp_path / "clip.mp4", duration=1.0, audio_rate=None, size=(64, 48))
    seen: list[float] = []

    def stubborn(path):  # an overshoot of a fixed 0.3 over the decoded peak, whatever the gain
        with av.open(str(path)) as c:
            peak = max(float(abs(f.to_ndarray()).max()) for f in c.decode(c.streams.audio[0]))
        seen.append(peak)
        return peak + 0.3

    monkeypatch.setattr(mux_module, "aac_peak", stubborn)
    wave, _ = limit_peak(_square(440.0))
    out = mux_audio(video, wave, SR, tmp_path / "out.mp4")
    assert stubborn(out) <= AAC_CEILING  # the old loop's third try wrote 0.947: above the ceiling
    assert len(seen) >= 3 and seen == sorted(seen, reverse=True)
    monkeypatch.setattr(mux_module, "aac_peak", lambda path: 1.5)
    with pytest.raises(MediaError, match="still peaked"):
        mux_audio(video, wave, SR, tmp_path / "never.mp4")
    assert not (tmp_path / "never.mp4").exists()
    assert aac_peak(out) <= AAC_CEILING


def test_one_loudness_for_every_output():
    """Issue 35: every written output at a -1 dBTP true peak, up or down; near-silence raised 30 dB at most."""
    from soundvcm.media.audio import normalize_peak

    ceiling = 10 ** (PEAK_DBFS / 20)
    for level in (0.05, 0.3, 3.0):  # -26, -10 and +10 dBFS
        out, gain = normalize_peak(level * _faded_sine(440.0, 0.3))
        assert true_peak(out) == pytest.approx(ceiling, rel=1e-4) and gain == pytest.approx(
            ceiling / true_peak(level * _faded_sine(440.0, 0.3))
        )
    hush = 1e-4 * _faded_sine(440.0, 0.3)  # -80 dBFS: raised by 30 dB only
    out, gain = normalize_peak(hush)
    assert gain == pytest.approx(10**1.5) and true_peak(out) < 0.01
    assert normalize_peak(torch.zeros(100))[1] == 1.0
    with pytest.raises(ValueError, match="NaN"):
        normalize_peak(torch.tensor([0.1, float("inf")]))


@pytest.mark.parametrize("steps", ["1", "2"])
def test_generate_writes_every_model_and_step_count_at_one_level(tmp_path, steps):
    import soundfile as sf

    from soundvcm.cli import main
    from soundvcm.media.audio import load_audio
    from soundvcm.network.checkpoint import save_network
    from soundvcm.network.mmdit import MMDiT
    from soundvcm.spec import preset_for_encoders

    video = make_video(tmp_path / "clip.mp4", duration=1.0, audio_rate=None, size=(64, 48))
    config, encoder_set = preset_for_encoders("debug", "lite2")
    net = MMDiT(config)
    with torch.no_grad():  # a quiet model: its latents sit ~-5 in log-mel (tens of dB below full scale)
        net.latent_mean.fill_(-5.0)
        net.latent_std.fill_(0.3)
    save_network(tmp_path / "m", net, preset="debug", encoder_set=encoder_set, objective="vcm")
    argv = ["generate", str(video), "--model", str(tmp_path / "m"), "--steps", steps]
    assert main([*argv, "--out", str(tmp_path / "norm")]) == 0
    assert main([*argv, "--out", str(tmp_path / "raw"), "--raw-level"]) == 0
    norm, _ = load_audio(tmp_path / "norm" / "clip.flac")
    raw, _ = load_audio(tmp_path / "raw" / "clip.flac")
    raw_db, norm_db = (20 * math.log10(true_peak(w)) for w in (raw, norm))
    assert raw_db < PEAK_DBFS - 3  # quiet as the model made it
    assert norm_db == pytest.approx(min(PEAK_DBFS, raw_db + 30), abs=0.15)  # the policy (16-bit rounding aside)
    assert sf.info(str(tmp_path / "raw" / "clip.flac")).frames == norm.numel()
