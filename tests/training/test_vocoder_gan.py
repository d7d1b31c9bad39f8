"""Adversarial fine-tuning of a trunk student (soundvcm.training.vocoder_gan, issue 35): the least-squares
losses on known answers, what each discriminator sees, and a run that trains both sides, checkpoints
them together and resumes exactly. Uses the real HiFi-GAN V1 universal weights (offline)."""

from __future__ import annotations

import pytest
import torch

from soundvcm.encoders.hifigan import HiFiGAN
from soundvcm.encoders.trunk_vocoder import TrunkShape
from soundvcm.training.vocoder import DistillConfig, StudentShape
from soundvcm.training.vocoder_gan import (
    AdversarialDistiller,
    Discriminators,
    PeriodDiscriminator,
    discriminator_loss,
    generator_losses,
)

HOP = HiFiGAN.hop_length
TINY = TrunkShape(layers=1, kernel=3)


def _outputs(logit: float, feature: float):
    return [(torch.full((2, 5), logit), [torch.full((2, 3), feature), torch.full((2, 4), feature)])] * 3


def test_least_squares_losses_on_known_answers():
    """D's loss is 0 when it says 1 to the teacher and 0 to the student, and 3 x (1 + 1) when it says the
    opposite; the student's adversarial term is 0 when D says 1 to it; feature matching is the L1 of the
    feature maps (3 discriminators x 2 maps x |0.5 - 0.25|) and takes no gradient through the real side."""
    assert float(discriminator_loss(_outputs(1.0, 0.0), _outputs(0.0, 0.0))) == 0.0
    assert float(discriminator_loss(_outputs(0.0, 0.0), _outputs(1.0, 0.0))) == 6.0
    adv, match = generator_losses(_outputs(1.0, 0.5), _outputs(1.0, 0.25))
    assert float(adv) == 0.0 and float(match) == pytest.approx(3 * 2 * 0.25)
    real = [(torch.zeros(1), [torch.ones(3, requires_grad=True)])]
    fake = [(torch.zeros(1, requires_grad=True), [torch.zeros(3, requires_grad=True)])]
    _, match = generator_losses(real, fake)
    match.backward()
    assert real[0][1][0].grad is None and fake[0][1][0].grad is not None


def test_period_discriminator_sees_samples_one_period_apart():
    """Folded by p, a waveform's columns are its samples p apart: D depends on each column alone until
    its last layers mix nothing across columns ((k, 1) kernels), so changing one column changes only
    that column's logits."""
    torch.manual_seed(0)
    d = PeriodDiscriminator(3).eval()
    wave = torch.randn(1, 3 * 200)
    other = wave.clone()
    other[:, 1::3] += 1.0  # column 1 only
    with torch.no_grad():
        a, b = d(wave)[0].view(-1, 3), d(other)[0].view(-1, 3)
    assert torch.equal(a[:, 0], b[:, 0]) and torch.equal(a[:, 2], b[:, 2]) and not torch.equal(a[:, 1], b[:, 1])
    assert len(Discriminators()(torch.randn(2, 4096))) == 8  # 5 periods + 3 resolutions
    assert Discriminators()(torch.randn(2, 4097))[0][0].shape[0] == 2  # any length: padded to the period


@pytest.fixture(scope="module")
def bank():
    g = torch.Generator().manual_seed(0)
    from soundvcm.media.mel import MEL_HIFIGAN, mel_spectrogram

    noise = torch.randn(10, 32 * HOP, generator=g) * torch.rand(10, 1, generator=g)
    mels = mel_spectrogram(noise, MEL_HIFIGAN)[:, :, :32]
    with torch.inference_mode():
        return mels, HiFiGAN.pretrained()(mels)


def test_adversarial_run_trains_both_sides_and_resumes_exactly(bank, tmp_path):
    cfg = DistillConfig(segments=10, context=32, crop=12, steps=4, batch=2, held_out=2, checkpoint_every=2,
                        validate_every=4, decay_start=4, lr=1e-3, adversarial=1.0)  # fmt: skip
    whole = AdversarialDistiller(bank, tmp_path / "whole", cfg, TINY)
    disc0 = {k: v.clone() for k, v in whole.disc.state_dict().items()}
    whole.fit()
    assert not all(torch.equal(disc0[k], v) for k, v in whole.disc.state_dict().items())  # D trained
    assert {"disc", "adv", "match", "mel_l1"} <= set(whole.history[-1])
    half = AdversarialDistiller(bank, tmp_path / "half", cfg, TINY)
    half.fit(steps=2)
    again = AdversarialDistiller(bank, tmp_path / "half", cfg, TINY)  # from the checkpoint at step 2
    assert again.step == 2
    again.fit()
    for a, b in ((whole.student, again.student), (whole.disc, again.disc)):
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(x, y, rtol=0, atol=1e-6, msg=name)
    with pytest.raises(ValueError, match="trunk students"):
        AdversarialDistiller(bank, tmp_path / "h", cfg, StudentShape(channels=16))
