"""The lighter vocoder's distillation (soundvcm.training.vocoder): bank, losses, schedule, resume,
stop and export, on a tiny teacher and a tiny open-data folder (no real weights needed)."""

from __future__ import annotations

import json
import signal
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch

from soundvcm.encoders.hifigan import HiFiGAN
from soundvcm.training.interrupt import TrainingInterrupted
from soundvcm.training.vocoder import (
    HOP,
    PEAK,
    SAMPLE_RATE,
    DistillConfig,
    StudentShape,
    VocoderDistiller,
    export_shape,
    export_student,
    log_mel_l1,
    stft_losses,
)
from soundvcm.training.vocoder_bank import _segment, bank_chunks, build_bank, load_bank, training_audio

TINY = StudentShape(channels=16, resblock_kernels=(3,))
CFG = DistillConfig(segments=12, context=16, margin=2, chunk=5, steps=6, batch=2, held_out=4,
                    checkpoint_every=3, validate_every=3, decay_start=2, lr=1e-3, lr_end=1e-4)  # fmt: skip


def _open_data(root):
    """foley/sfx/bbb train splits of two short tones each (the layout of `soundvcm data open`)."""
    rng = np.random.default_rng(0)
    for k, part in enumerate(("foley", "sfx", "bbb")):
        (root / part / "train").mkdir(parents=True)
        lines = ["path\tcaption"]
        for i in range(2):
            t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
            wave = 0.3 * np.sin(2 * np.pi * (220 + 110 * (2 * k + i)) * t) + 0.01 * rng.standard_normal(t.size)
            sf.write(root / part / "train" / f"{part}_{i}.flac", wave.astype(np.float32), SAMPLE_RATE)
            lines.append(f"train/{part}_{i}.mp4\ta tone")
        (root / part / "train.tsv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    data = _open_data(root / "open")
    torch.manual_seed(0)
    teacher = StudentShape(channels=32, resblock_kernels=(3,)).build().eval()
    build_bank(data, root / "bank", CFG, teacher, None)
    return data, root / "bank", teacher


def test_training_audio_weights_and_missing_data(tmp_path, bank):
    data = bank[0]
    files = training_audio(data)
    assert len(files) == 6 and all(f.suffix == ".flac" and f.is_file() for f, _ in files)
    assert sum(w for _, w in files) == pytest.approx(1.0)
    with pytest.raises(FileNotFoundError, match="soundvcm data open"):
        training_audio(tmp_path)


def test_bank_holds_the_teachers_waveform_and_resumes_identically(bank):
    data, folder, teacher = bank
    mels, waves = load_bank(folder, CFG)
    assert mels.shape == (12, 80, 16) and waves.shape == (12, 16 * HOP)
    with torch.inference_mode():  # each stored waveform is the teacher's rendering of its mel (fp16)
        again = teacher(mels[:3]).clamp(-1, 1)
    assert torch.allclose(waves[:3], again, atol=2e-3)
    # a lost chunk is rebuilt from the same seed: the same segments
    chunk = bank_chunks(folder, CFG)[1]
    before = chunk.read_bytes()
    chunk.unlink()
    build_bank(data, folder, CFG, teacher, None)
    assert torch.equal(load_bank(folder, CFG)[0], mels) and chunk.read_bytes() == before


def test_a_gain_bank_spreads_the_segment_peaks(tmp_path, bank):
    data, folder, teacher = bank
    flat = [_segment(f, 16, np.random.default_rng(i)) for i, (f, _) in enumerate(training_audio(data))]
    assert all(float(seg.abs().max()) == pytest.approx(PEAK) for seg in flat if seg is not None)
    spread = [_segment(f, 16, np.random.default_rng(i), 0.02) for i, (f, _) in enumerate(training_audio(data))]
    peaks = [float(seg.abs().max()) for seg in spread if seg is not None]
    assert all(0.02 <= p <= PEAK + 1e-6 for p in peaks) and max(peaks) / min(peaks) > 1.5
    cfg = replace(CFG, min_peak=0.02)
    build_bank(data, tmp_path / "gain", cfg, teacher, None)
    quiet = load_bank(tmp_path / "gain", cfg)[0].mean(dim=(1, 2))  # the mean log-mel per segment
    assert float(quiet.mean()) < float(load_bank(folder, CFG)[0].mean(dim=(1, 2)).mean())


def test_losses_are_zero_on_the_target_and_grow_with_error():
    g = torch.Generator().manual_seed(1)
    target = 0.3 * torch.randn(2, 8 * HOP, generator=g)
    assert float(stft_losses(target, target)) == pytest.approx(0.0, abs=1e-6)
    assert float(log_mel_l1(target, target)) == pytest.approx(0.0, abs=1e-6)
    small, large = target + 0.01 * torch.randn_like(target), target + 0.1 * torch.randn_like(target)
    assert 0 < float(stft_losses(small, target)) < float(stft_losses(large, target))
    assert 0 < float(log_mel_l1(small, target)) < float(log_mel_l1(large, target))


def test_lr_is_constant_then_a_cosine_to_lr_end(tmp_path, bank):
    d = VocoderDistiller(load_bank(bank[1], CFG), tmp_path, CFG, TINY)
    assert d.lr(0) == d.lr(1) == CFG.lr
    assert d.lr(4) == pytest.approx((CFG.lr + CFG.lr_end) / 2)
    assert d.lr(CFG.steps) == pytest.approx(CFG.lr_end)
    assert CFG.lr > d.lr(3) > d.lr(5) > CFG.lr_end


def test_distillation_learns_resumes_exactly_and_exports(tmp_path, bank):
    b = load_bank(bank[1], CFG)
    cfg = replace(CFG, steps=40, decay_start=40, validate_every=40, checkpoint_every=20)
    whole = VocoderDistiller(b, tmp_path / "whole", cfg, TINY)
    start = whole.validate()
    whole.fit()
    assert whole.history[-1]["val_mel_l1"] < start  # it learns the teacher
    # 20 steps, a new process (a new distiller from the files), 20 more: the same weights
    VocoderDistiller(b, tmp_path / "split", cfg, TINY).fit(steps=20)
    split = VocoderDistiller(b, tmp_path / "split", cfg, TINY)
    assert split.step == 20
    split.fit()
    for (name, a), (_, c) in zip(whole.student.state_dict().items(), split.student.state_dict().items()):
        assert torch.equal(a, c), name
    stem = export_student(tmp_path / "whole", tmp_path / "export" / "fast")
    meta = json.loads(stem.with_suffix(".json").read_text())
    assert meta["step"] == 40 and meta["shape"]["channels"] == 16 and export_shape(stem) == TINY
    loaded = HiFiGAN.distilled(stem)
    mel = b[0][:2]
    with torch.inference_mode():
        assert torch.allclose(loaded(mel), whole.student.eval()(mel), atol=2e-3)  # fp16 weights


def test_sigterm_saves_at_the_step_boundary(tmp_path, bank):
    b = load_bank(bank[1], CFG)
    cfg = replace(CFG, steps=50, checkpoint_every=1000, validate_every=1000)
    d = VocoderDistiller(b, tmp_path, cfg, TINY)
    step = d.train_step

    def stepped():  # the signal arrives during step 3
        record = step()
        if d.step == 3:
            signal.raise_signal(signal.SIGTERM)
        return record

    d.train_step = stepped  # type: ignore[method-assign]
    with pytest.raises(TrainingInterrupted) as info:
        d.fit()
    assert info.value.step == 3
    assert json.loads((tmp_path / "checkpoint.json").read_text())["step"] == 3
    assert VocoderDistiller(b, tmp_path, cfg, TINY).step == 3
