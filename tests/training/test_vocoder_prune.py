"""The pruned student (soundvcm.training.vocoder_prune): known answers on a tiny random HiFi-GAN."""

from __future__ import annotations

import pytest
import torch

from soundvcm.encoders.hifigan import HiFiGAN
from soundvcm.training.vocoder import DistillConfig, StudentShape, VocoderDistiller
from soundvcm.training.vocoder_prune import prune_teacher, refit


def _teacher(channels: int = 32) -> HiFiGAN:
    torch.manual_seed(0)
    return HiFiGAN(channels=channels, resblock_kernels=(3, 5)).eval()


@torch.no_grad()
def _kill_half(model: HiFiGAN) -> None:
    """Zero every weight that writes into or reads from the odd channels of each stream and inner
    ResBlock channel: those channels carry nothing, so removing them changes nothing."""
    n = model.num_kernels
    model.conv_pre.weight[1::2] = 0
    model.conv_pre.bias[1::2] = 0
    for i, up in enumerate(model.ups):
        up.weight[1::2] = 0  # reads the odd channels of the previous stream
        up.weight[:, 1::2] = 0  # writes the odd channels of this stage's stream
        up.bias[1::2] = 0
        for block in model.resblocks[i * n : (i + 1) * n]:
            for c1, c2 in zip(block.convs1, block.convs2):
                c1.weight[:, 1::2] = 0
                c1.weight[1::2] = 0
                c1.bias[1::2] = 0
                c2.weight[:, 1::2] = 0
                c2.weight[1::2] = 0
                c2.bias[1::2] = 0
    model.conv_post.weight[:, 1::2] = 0


def test_pruning_to_the_full_width_is_the_teacher():
    teacher = _teacher()
    mel = torch.randn(2, 80, 12)
    with torch.no_grad():
        assert torch.equal(prune_teacher(teacher, 32)(mel), teacher(mel))


def test_pruning_removes_dead_channels_first_and_keeps_the_output():
    teacher = _teacher()
    _kill_half(teacher)
    student = prune_teacher(teacher, 16)
    assert student.conv_pre.out_channels == 16 and student.conv_post.in_channels == 1
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in teacher.parameters()) / 2
    mel = torch.randn(2, 80, 12)
    with torch.no_grad():
        assert torch.allclose(student(mel), teacher(mel), atol=1e-6)


def test_pruning_live_channels_changes_the_output_and_rejects_bad_widths():
    teacher = _teacher()
    mel = torch.randn(2, 80, 12)
    with torch.no_grad():
        assert not torch.allclose(prune_teacher(teacher, 16)(mel), teacher(mel), atol=1e-3)
    for bad in (0, 40, 20):  # too narrow, wider than the teacher, not divisible by 2**4
        with pytest.raises(ValueError, match="channels"):
            prune_teacher(teacher, bad)


def test_a_distiller_starts_from_the_pruned_weights(tmp_path):
    teacher = _teacher()
    init = prune_teacher(teacher, 16)
    bank = (torch.randn(8, 80, 16), torch.zeros(8, 16 * 256))
    cfg = DistillConfig(segments=8, context=16, margin=2, held_out=4, batch=2)
    d = VocoderDistiller(bank, tmp_path, cfg, StudentShape(channels=16, resblock_kernels=(3, 5)), init=init)
    for (name, a), (_, b) in zip(d.student.state_dict().items(), init.state_dict().items()):
        assert torch.equal(a, b), name


def _gap(a: HiFiGAN, b: HiFiGAN, mel: torch.Tensor) -> float:
    with torch.no_grad():
        return float((a(mel) - b(mel)).abs().mean() / b(mel).abs().mean())


def test_refit_at_full_width_reproduces_the_teacher():
    teacher = _teacher()
    student = prune_teacher(teacher, 32)
    torch.manual_seed(1)
    for p in student.parameters():  # perturbed: the refit must find the teacher's function again
        p.data += 0.05 * torch.randn_like(p)
    mel = torch.randn(6, 80, 24)
    before = _gap(student, teacher, mel)
    refit(student, teacher, torch.randn(8, 80, 24), ridge=1e-6)
    assert _gap(student, teacher, mel) < min(1e-2, before / 10)


def test_refit_brings_a_pruned_student_closer_on_unseen_mels():
    teacher = _teacher()
    student = prune_teacher(teacher, 16)
    unseen = torch.randn(6, 80, 24)
    before = _gap(student, teacher, unseen)
    refit(student, teacher, torch.randn(16, 80, 24))
    assert _gap(student, teacher, unseen) < 0.85 * before  # 0.77x here; 4.5 -> 0.67 log-mel L1 on HiFi-GAN V1
