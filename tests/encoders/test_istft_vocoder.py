"""The frame-rate iSTFT vocoder (soundvcm.encoders.istft_vocoder, issue 35): exact synthesis,
HiFi-GAN's sample alignment, its receptive field, precision, and the export -> loader round trip."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from soundvcm.encoders.hifigan import HiFiGAN
from soundvcm.encoders.istft_vocoder import ISTFTShape, ISTFTVocoder, analyse, overlap_add
from soundvcm.encoders.students import distilled_vocoder
from soundvcm.media.mel import MEL_HIFIGAN, mel_spectrogram
from soundvcm.training.vocoder import (
    DistillConfig,
    VocoderDistiller,
    export_shape,
    export_student,
    shape_from_dict,
)
from soundvcm.training.vocoder_losses import spectrum_loss

TINY = ISTFTShape(dim=16, layers=2, hidden=32, n_fft=512)  # the smallest window for hop 256
HOP = ISTFTVocoder.hop_length


@pytest.mark.parametrize(("n_fft", "hop"), [(1024, 256), (64, 16)])
def test_overlap_add_inverts_the_same_padded_stft_exactly(n_fft, hop):
    torch.manual_seed(0)
    x = torch.randn(2, 40 * hop, dtype=torch.float64)
    window = torch.hann_window(n_fft, dtype=torch.float64)
    frames = torch.fft.irfft(analyse(x, window, hop), n=n_fft, dim=1) * window[:, None]
    y = overlap_add(frames, window, hop)
    assert y.shape == x.shape
    assert (y - x).abs().max() < 1e-12  # OLA of w^2 x / sum w^2 = x at every sample, the ends included


def test_synthesizing_the_analysis_of_a_wave_gives_the_wave():
    """The spectrum the head is trained towards (analyse) is the one whose synthesis is the teacher's wave."""
    torch.manual_seed(0)
    model = ISTFTVocoder(TINY)
    wave = 0.3 * torch.randn(2, 12 * HOP)
    assert (model.synthesize(analyse(wave, model.window, HOP)) - wave).abs().max() < 1e-5
    # the head's magnitude bound never cuts a reachable spectrum: a full-scale square wave (the
    # largest windowed sum there is, at its fundamental and DC) stays within it
    square = torch.sign(torch.sin(torch.arange(12 * HOP) / 40.0))[None] * 0.999
    assert analyse(square, model.window, HOP).abs().max() < torch.tensor(model.max_log_magnitude).exp()
    with torch.no_grad():
        model.head.bias[: TINY.n_fft // 2 + 1] = 50.0
        peak = float(model.spectrum(torch.zeros(1, 80, 4)).abs().max())
    assert peak == pytest.approx(TINY.n_fft / 2, rel=1e-4)


def test_spectrum_loss_is_zero_on_the_target_and_weighs_phase_by_compressed_magnitude():
    torch.manual_seed(0)
    target = torch.polar(torch.rand(2, 9, 5) * 10, torch.rand(2, 9, 5) * 6)
    assert spectrum_loss(target, target) == 0
    turned = target * torch.exp(torch.tensor(0.5j))  # the phase off by 0.5 rad everywhere
    expected = ((target.abs() ** 0.3) ** 2 * abs(1 - torch.exp(torch.tensor(0.5j))) ** 2).mean()
    assert spectrum_loss(turned, target) == pytest.approx(float(expected), rel=1e-4)
    quiet = target.clone()
    quiet[0] *= 1e-4  # the same phase error on quiet bins costs ~(1e-4)^0.6 as much
    assert spectrum_loss(quiet * torch.exp(torch.tensor(0.5j)), quiet) < 0.6 * spectrum_loss(turned, target)


def test_frame_f_is_centred_where_hifigans_mel_frame_f_is():
    """A click at the centre of frame 7's window lands on sample 256 * 7 + 128, and HiFi-GAN's mel
    of a click there peaks at frame 7 (the teacher bank's alignment is the student's)."""
    n_fft, f = 1024, 7
    frames = torch.zeros(1, n_fft, 16, dtype=torch.float64)
    frames[0, n_fft // 2, f] = 1.0
    y = overlap_add(frames, torch.hann_window(n_fft, dtype=torch.float64), HOP)[0]
    assert int(y.abs().argmax()) == HOP * f + HOP // 2
    click = torch.zeros(1, 16 * HOP)
    click[0, HOP * f + HOP // 2] = 1.0
    mel = mel_spectrogram(click, MEL_HIFIGAN)[0]
    assert int(mel.mean(0).argmax()) == f


@pytest.mark.parametrize("hop", [256, 64])
def test_shapes_dtypes_and_the_receptive_field(hop):
    torch.manual_seed(0)
    model = ISTFTVocoder(replace(TINY, n_fft=4 * hop, hop=hop)).eval()
    mel = torch.randn(2, 80, 60) - 5
    with torch.inference_mode():
        y = model(mel)
        assert y.shape == (2, 60 * HOP) and y.dtype == torch.float32 and y.abs().max() <= 1
        moved = mel.clone()
        moved[:, :, 30] += 3.0
        changed = (model(moved) - y).abs().amax(0) > 0
    rc = model.receptive_context
    assert rc == (3 + 3 * 2 + 3 if hop == 256 else 3 + 3 * 2 + (1 + 2) + 2)  # embed, blocks, fine part, windows
    touched = changed.nonzero()[:, 0]
    assert touched.min() >= (30 - rc) * HOP and touched.max() < (31 + rc) * HOP
    assert changed[30 * HOP : 31 * HOP].all()  # the frame's own samples do move
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        spec = model.spectrum(mel)
        z = model(mel)
    assert spec.dtype == torch.complex64 and z.dtype == torch.float32  # head and iSTFT stay fp32
    # bf16 backbone: its rounding (2^-8 relative per layer) moves the output by far less than the signal
    assert (z - y).abs().mean() < 0.1 * y.abs().mean()


def test_a_window_shorter_than_two_hops_or_a_hop_off_the_frame_is_refused():
    with pytest.raises(ValueError, match="n_fft"):
        replace(TINY, n_fft=256)
    with pytest.raises(ValueError, match="hop"):
        replace(TINY, hop=96, n_fft=384)


def test_training_mode_is_not_clamped():
    model = ISTFTVocoder(TINY)
    bins = TINY.n_fft // 2 + 1
    with torch.no_grad():  # loud: exp(4) per bin, phase pi k: a click at each window's centre
        model.head.bias[:bins] = 4.0
        model.head.bias[bins:] = torch.pi * torch.arange(bins)
    mel = torch.zeros(1, 80, 8)
    assert model.train()(mel).abs().max() > 1 and model.eval()(mel).abs().max() <= 1


def test_distilled_istft_student_exports_and_loads_by_kind(tmp_path):
    torch.manual_seed(0)
    teacher = HiFiGAN(channels=32, resblock_kernels=(3,)).eval()
    mels = torch.randn(12, 80, 16) - 5
    with torch.inference_mode():
        waves = teacher(mels)
    cfg = DistillConfig(segments=12, context=16, margin=2, steps=30, batch=2, held_out=4, checkpoint_every=10,
                        validate_every=30, decay_start=30, lr=2e-3)  # fmt: skip
    shape = replace(TINY, n_fft=1024)
    d = VocoderDistiller((mels, waves), tmp_path / "run", cfg, shape)
    start = d.validate()
    d.fit()
    assert d.history[-1]["val_mel_l1"] < start  # it learns the teacher's mel
    assert "complex" not in d.history[-1]  # no spectrum loss unless asked for
    # the same initial weights (seeded) with and without the spectrum term: the loss differs by it exactly
    spectral = VocoderDistiller((mels, waves), tmp_path / "spectral", replace(cfg, spectrum_weight=10.0), shape)
    plain = VocoderDistiller((mels, waves), tmp_path / "plain", cfg, shape)
    with torch.no_grad():
        with_term, without = spectral._loss(mels[:2], waves[:2])[1], plain._loss(mels[:2], waves[:2])[1]
    assert with_term["complex"] > 0
    assert with_term["loss"] - without["loss"] == pytest.approx(10 * with_term["complex"], rel=1e-4)
    doc = json.loads((tmp_path / "run" / "checkpoint.json").read_text())
    assert doc["shape"]["kind"] == "istft" and shape_from_dict(doc["shape"]) == shape
    resumed = VocoderDistiller((mels, waves), tmp_path / "run", cfg, shape)
    assert resumed.step == 30
    stem = export_student(tmp_path / "run", tmp_path / "export" / "istft")
    assert export_shape(stem) == shape
    loaded = distilled_vocoder(stem)
    assert isinstance(loaded, ISTFTVocoder) and not loaded.training
    with torch.inference_mode():
        ref = d.student.eval()(mels[:2])
        assert (loaded(mels[:2]) - ref).abs().max() < 1e-2 * max(1e-3, float(ref.abs().max()))  # fp16 weights


def test_a_hifigan_export_without_kind_still_loads_as_hifigan(tmp_path):
    """Exports from before issue 35 carry no ``kind``: they are HiFi-GAN students."""
    from soundvcm.training.vocoder import StudentShape

    student = StudentShape(channels=16, resblock_kernels=(3,))
    meta = {"shape": {k: v for k, v in student.to_dict().items() if k != "kind"}}
    from safetensors.torch import save_file

    save_file({k: v.half() for k, v in student.build().state_dict().items()}, str(tmp_path / "old.safetensors"))
    (tmp_path / "old.json").write_text(json.dumps(meta))
    assert isinstance(distilled_vocoder(tmp_path / "old"), HiFiGAN)
    assert shape_from_dict(meta["shape"]) == student


KEPT = sorted(p.with_suffix("") for p in (Path(__file__).parents[2] / "resume" / "vocoder").glob("*.json"))


@pytest.mark.parametrize("stem", KEPT, ids=[p.name for p in KEPT])
def test_the_kept_students_load_by_their_kind_and_vocode(stem):
    """resume/vocoder's exports (what a next session continues with --init) load as what they say."""
    kind = json.loads(stem.with_suffix(".json").read_text())["shape"].get("kind", "hifigan")
    model = distilled_vocoder(stem)
    from soundvcm.encoders.trunk_vocoder import TrunkVocoder

    assert isinstance(model, {"istft": ISTFTVocoder, "trunk": TrunkVocoder}.get(kind, HiFiGAN))
    noise = 0.1 * torch.randn(1, 24 * HOP, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        wave = model(mel_spectrogram(noise, MEL_HIFIGAN))
    assert wave.shape == (1, 24 * HOP) and torch.isfinite(wave).all()
    assert wave.pow(2).mean().sqrt() > 0.1 * noise.pow(2).mean().sqrt()  # it sounds, at about the level it was given


def test_a_missing_or_broken_export_is_named(tmp_path):
    from soundvcm.weights import WeightsError

    with pytest.raises(WeightsError, match="is missing"):
        distilled_vocoder(tmp_path / "none")
    (tmp_path / "bad.json").write_text("{")
    (tmp_path / "bad.safetensors").write_bytes(b"")
    with pytest.raises(WeightsError, match="not a `soundvcm vocoder export` description"):
        distilled_vocoder(tmp_path / "bad")
