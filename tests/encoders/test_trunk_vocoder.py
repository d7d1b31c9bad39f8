"""V1's trunk with an iSTFT head (soundvcm.encoders.trunk_vocoder, issue 35): the trunk is the
teacher's exactly and never part of the student's state, the distiller's crops line up, the head
learns, and an export loads by its kind. Uses the real HiFi-GAN V1 universal weights (offline)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from soundvcm.encoders.hifigan import HiFiGAN, conv_nwc
from soundvcm.encoders.istft_vocoder import analyse
from soundvcm.encoders.students import distilled_vocoder
from soundvcm.encoders.trunk_vocoder import STAGES, TrunkShape, TrunkVocoder
from soundvcm.training.vocoder import DistillConfig, VocoderDistiller, export_shape, export_student, shape_from_dict

HOP = HiFiGAN.hop_length
TINY = TrunkShape(layers=2, kernel=3)


@pytest.fixture(scope="module")
def teacher():
    return HiFiGAN.pretrained()


@pytest.fixture(scope="module")
def bank(teacher):
    """12 segments of 48 frames: the mels of band-limited noise, and the teacher's waves."""
    g = torch.Generator().manual_seed(0)
    from soundvcm.media.mel import MEL_HIFIGAN, mel_spectrogram

    noise = torch.randn(12, 48 * HOP, generator=g) * torch.rand(12, 1, generator=g)
    noise = torch.nn.functional.avg_pool1d(noise[:, None], 5, 1, 2)[:, 0]  # some spectral slope
    mels = mel_spectrogram(noise, MEL_HIFIGAN)[:, :, :48]
    with torch.inference_mode():
        return mels, teacher(mels)


def test_the_trunk_is_the_teachers_and_not_the_students_state(teacher):
    model = TrunkVocoder(TINY, teacher).eval()
    mel = torch.randn(2, 80, 10) - 5
    with torch.inference_mode():
        assert torch.equal(model.features(mel), teacher.trunk(mel, STAGES)[:, :, 0])
        assert model(mel).shape == (2, 10 * HOP)
    assert model.features(mel).shape == (2, 128, 10 * HOP // model.hop)
    names = set(model.state_dict())
    assert names and not any(n.startswith(("teacher", "conv_pre", "ups", "resblocks")) for n in names)
    head = sum(p.numel() for p in model.parameters())
    assert head < 0.02 * sum(p.numel() for p in teacher.parameters())  # the head alone is trained
    # stage 2's blocks left out count as the identity: none kept = stage 1 through stage 2's transposed conv
    with torch.inference_mode():
        up = conv_nwc(teacher.ups[1], torch.nn.functional.leaky_relu(teacher.trunk(mel, 1), 0.1))
        assert torch.equal(TrunkVocoder(replace(TINY, stage2_blocks=0), teacher).features(mel), up[:, :, 0])
        two = (teacher.resblocks[3](up) + teacher.resblocks[4](up) + up) / 3
        got = TrunkVocoder(replace(TINY, stage2_blocks=2), teacher).features(mel)
        assert (got - two[:, :, 0]).abs().max() < 1e-5 * two.abs().max()
        assert (got - model.features(mel)).abs().max() > 1e-2 * two.abs().max()  # the kernel-11 block matters
    with pytest.raises(ValueError, match="stage2_blocks"):
        replace(TINY, stage2_blocks=4)


def test_synthesizing_the_analysis_of_the_teachers_wave_gives_it_back(teacher, bank):
    """The spectrum the head is trained towards (hop 4, n_fft 16) reproduces the teacher's wave."""
    model = TrunkVocoder(TINY, teacher)
    wave = bank[1][:2]
    assert (model.synthesize(analyse(wave, model.window, model.hop)) - wave).abs().max() < 1e-5
    with pytest.raises(ValueError, match="n_fft"):
        TrunkShape(n_fft=6)


def test_distiller_crops_line_up_with_the_teacher(teacher, bank, tmp_path):
    """A crop of the stored features is the trunk of that crop's mel, and the crop of the teacher's
    wave is the teacher's wave of that mel, more than V1's reach (RECEPTIVE_CONTEXT = 16 frames) from
    the crop's ends: features and waves are cut at the same place."""
    mels, waves = bank
    cfg = DistillConfig(segments=12, context=48, crop=36, held_out=4, batch=3, steps=1)
    d = VocoderDistiller((mels, waves), tmp_path / "run", cfg, TINY)
    rows = torch.tensor([4, 7, 9])
    feats, truth = d.trunk_crops(rows, torch.Generator().manual_seed(3))
    starts = torch.randint(13, (3,), generator=torch.Generator().manual_seed(3))
    assert starts.unique().numel() > 1  # the seeded crops differ in place
    with torch.inference_mode():
        for i, (r, a) in enumerate(zip(rows.tolist(), starts.tolist())):
            mel = mels[r : r + 1, :, a : a + 36]
            inner = slice(17 * 64, 19 * 64)
            ref = teacher.trunk(mel, STAGES)[0, :, 0]
            assert (feats[i][:, inner] - ref[:, inner]).abs().max() < 2e-3 * ref.abs().max() + 1e-2  # fp16 store
            wave = teacher(mel)[0]
            error = (truth[i][17 * HOP : 19 * HOP] - wave[17 * HOP : 19 * HOP]).abs().max()
            assert error < 1e-3 + 1e-2 * wave.abs().max()


def test_the_head_learns_resumes_and_exports_by_kind(teacher, bank, tmp_path):
    mels, waves = bank
    cfg = DistillConfig(segments=12, context=48, crop=8, steps=30, batch=4, held_out=4, checkpoint_every=10,
                        validate_every=30, decay_start=30, lr=3e-3, spectrum_weight=1.0)  # fmt: skip
    d = VocoderDistiller((mels, waves), tmp_path / "run", cfg, TINY)
    start = d.validate()
    d.fit()
    assert d.history[-1]["val_mel_l1"] < 0.8 * start and d.history[-1]["complex"] > 0
    doc = json.loads((tmp_path / "run" / "checkpoint.json").read_text())
    assert doc["shape"]["kind"] == "trunk" and shape_from_dict(doc["shape"]) == TINY
    assert VocoderDistiller((mels, waves), tmp_path / "run", cfg, TINY).step == 30
    stem = export_student(tmp_path / "run", tmp_path / "export" / "trunk")
    assert export_shape(stem) == TINY
    loaded = distilled_vocoder(stem)
    assert isinstance(loaded, TrunkVocoder) and not loaded.training
    with torch.inference_mode():
        ref = d.student.eval()(mels[:2])
        assert (loaded(mels[:2]) - ref).abs().max() < 1e-2 * max(1e-3, float(ref.abs().max()))  # fp16 weights
