"""Adversarial fine-tuning of a trunk student (issue 35): discriminators on top of the distillation.

The regression losses of :mod:`soundvcm.training.vocoder` pull the student towards the teacher's
waveform; where the phase cannot be predicted from the mel (noise, dense textures) their optimum
is the conditional mean, which is quieter and smoother than any real waveform, and Fréchet
distances notice. A discriminator tells real from generated texture instead. Two kinds, from the
literature (our own small versions; widths a quarter of the originals so a CPU core trains them):

* **period** discriminators (HiFi-GAN, Kong et al. 2020, §2.2): the waveform folded into
  (T / p, p) for p = 2, 3, 5, 7, 11 and strided 2-D convolutions along T / p, so each sees
  samples p apart (periodic structure);
* **resolution** discriminators (UnivNet, Jang et al. 2021, §2.3): 2-D convolutions over the
  magnitude spectrogram at three STFT resolutions (spectral texture); log-magnitude (floor 1e-4,
  -80 dB), not UnivNet's linear one, so a broadband floor far below the peak counts.

Both judge waveforms divided by the teacher's peak of that segment (the same factor for the
teacher's and the student's: the level is the distillation losses' to teach). The bank's peaks
are drawn down to 0.02 (quiet mels matter), and on raw waveforms the first run's discriminators
saw nothing in quiet segments: their outputs stayed at 0.5 for both sides (loss 4.0 = 8 x 0.5) over
1750 steps, except on the loudest segments (BENCHMARKS, issue 35).

Losses (HiFi-GAN's, least squares): the discriminators minimise sum_k E[(1 - D_k(teacher))^2] +
E[D_k(student)^2]; the student adds ``adversarial`` x sum_k E[(1 - D_k(student))^2] and
``feature_weight`` x the L1 between the discriminators' feature maps of the teacher's and of its
waveform to its distillation losses. The "real" waveform is the teacher's (the bank's): the
student is to sound like the teacher, whose quality is the bar. One discriminator step, then one
student step, per batch; both checkpointed together (``d.``, ``p.`` beside ``s.``, ``o.``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from soundvcm.training.vocoder import VocoderDistiller, load_optimizer, optimizer_state

PERIODS = (2, 3, 5, 7, 11)
RESOLUTIONS = ((256, 64), (512, 128), (1024, 256))  # (n_fft, hop)
SLOPE = 0.1


def judged(convs: nn.ModuleList, post: nn.Module, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """Leaky-ReLU convolutions, then the output convolution: (logits, every layer's feature map)."""
    features = []
    for conv in convs:
        x = F.leaky_relu(conv(x), SLOPE)
        features.append(x)
    x = post(x)
    return x.flatten(1), [*features, x]


class PeriodDiscriminator(nn.Module):
    """The waveform folded by ``period``; (5, 1) convolutions, stride 3 along time, widths ``widths``."""

    def __init__(self, period: int, widths: tuple[int, ...] = (16, 64, 128, 256)):
        super().__init__()
        self.period = period
        chans = (1, *widths)
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(a, b, (5, 1), (3, 1), padding=(2, 0))) for a, b in zip(chans[:-1], chans[1:])
        )
        self.convs.append(weight_norm(nn.Conv2d(widths[-1], widths[-1], (5, 1), padding=(2, 0))))
        self.post = weight_norm(nn.Conv2d(widths[-1], 1, (3, 1), padding=(1, 0)))

    def forward(self, wave: Tensor) -> tuple[Tensor, list[Tensor]]:
        b, n = wave.shape
        pad = (-n) % self.period
        x = F.pad(wave, (0, pad), mode="reflect").view(b, 1, (n + pad) // self.period, self.period)
        return judged(self.convs, self.post, x)


class ResolutionDiscriminator(nn.Module):
    """2-D convolutions over the linear magnitude spectrogram at one STFT resolution."""

    def __init__(self, n_fft: int, hop: int, width: int = 32):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.window: Tensor
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.convs = nn.ModuleList(
            [weight_norm(nn.Conv2d(1, width, (3, 9), padding=(1, 4)))]
            + [weight_norm(nn.Conv2d(width, width, (3, 9), (1, 2), padding=(1, 4))) for _ in range(3)]
            + [weight_norm(nn.Conv2d(width, width, (3, 3), padding=(1, 1)))]
        )
        self.post = weight_norm(nn.Conv2d(width, 1, (3, 3), padding=(1, 1)))

    def forward(self, wave: Tensor) -> tuple[Tensor, list[Tensor]]:
        spec = torch.stft(wave.float(), self.n_fft, self.hop, window=self.window, return_complex=True).abs()
        x = spec.clamp_min(1e-4).log().transpose(1, 2).unsqueeze(1)  # (B, 1, frames, bins): bins strided
        return judged(self.convs, self.post, x)


class Discriminators(nn.Module):
    """Every period and resolution discriminator; ``forward`` gives each one's (logits, features)."""

    def __init__(self, periods: tuple[int, ...] = PERIODS, resolutions: tuple[tuple[int, int], ...] = RESOLUTIONS):
        super().__init__()
        self.members = nn.ModuleList(
            [PeriodDiscriminator(p) for p in periods] + [ResolutionDiscriminator(n, h) for n, h in resolutions]
        )

    def forward(self, wave: Tensor) -> list[tuple[Tensor, list[Tensor]]]:
        return [member(wave) for member in self.members]


def discriminator_loss(real: list, fake: list) -> Tensor:
    """sum_k E[(1 - D_k(real))^2] + E[D_k(fake)^2] (least squares, HiFi-GAN Eq. 1)."""
    return sum(((1 - r).square().mean() + f.square().mean() for (r, _), (f, _) in zip(real, fake)), torch.zeros(()))


def generator_losses(real: list, fake: list) -> tuple[Tensor, Tensor]:
    """(sum_k E[(1 - D_k(fake))^2], sum_k sum_l mean |features_l(real) - features_l(fake)|) with the real
    features held fixed (HiFi-GAN Eq. 2 and 3)."""
    adv = sum(((1 - f).square().mean() for _, (f, _) in zip(real, fake)), torch.zeros(()))
    match = sum(
        ((a.detach() - b).abs().mean() for (_, fa), (_, fb) in zip(real, fake) for a, b in zip(fa, fb)),
        torch.zeros(()),
    )
    return adv, match


class AdversarialDistiller(VocoderDistiller):
    """:class:`VocoderDistiller` with discriminators (module docstring); trunk students only."""

    def __init__(self, bank, out, cfg, shape, dtype=None, init=None):
        if getattr(shape, "kind", "") != "trunk" or cfg.adversarial <= 0:
            raise ValueError("adversarial fine-tuning is for trunk students (--student trunk) with --adversarial > 0")
        torch.manual_seed(cfg.seed + 1)
        self.disc = Discriminators()
        self.disc_optimizer = torch.optim.AdamW(self.disc.parameters(), cfg.disc_lr, betas=cfg.betas)
        super().__init__(bank, out, cfg, shape, dtype, init)  # restores a checkpoint (ours: _restore below)

    def _restore(self) -> None:
        super()._restore()
        from safetensors.torch import load_file

        state = load_file(str(self.out / "checkpoint.safetensors"))
        if not any(k.startswith("d.") for k in state):  # a distillation run continued adversarially
            return
        self.disc.load_state_dict({k[2:]: v for k, v in state.items() if k.startswith("d.")})
        load_optimizer(self.disc_optimizer, state, "p.")

    def _state(self) -> dict[str, Tensor]:
        disc = {f"d.{k}": v.detach().contiguous() for k, v in self.disc.state_dict().items()}
        return super()._state() | disc | optimizer_state(self.disc_optimizer, "p.")

    def _judge(self, wave: Tensor) -> list:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.dtype is not None):
            return self.disc(wave)

    def train_step(self) -> dict[str, float]:
        cfg, scale = self.cfg, self.lr(self.step) / self.cfg.lr
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr * scale
        for group in self.disc_optimizer.param_groups:
            group["lr"] = cfg.disc_lr * scale
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.step)  # resumes exactly
        rows = self.train_rows[torch.randint(len(self.train_rows), (cfg.batch,), generator=g)]
        self.student.train()
        self.disc.train()
        pred, truth, spec, spectrum = self._trunk_waves(rows, g)
        gain = 1 / truth.abs().amax(1, keepdim=True).clamp_min(1e-3)  # the teacher's peak -> 1 (docstring)
        d_loss = discriminator_loss(self._judge(truth * gain), self._judge(pred.detach() * gain))  # D's step
        self.disc_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        torch.nn.utils.clip_grad_norm_(self.disc.parameters(), 10.0)
        self.disc_optimizer.step()
        loss, record = self._combine(pred, truth, spec, spectrum)  # the student's step
        with torch.no_grad():
            real = self._judge(truth * gain)
        adv, match = generator_losses(real, self._judge(pred * gain))
        loss = loss + cfg.adversarial * adv + cfg.feature_weight * match
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.student.parameters(), 10.0)
        self.optimizer.step()
        self.step += 1
        extra = {"disc": float(d_loss.detach()), "adv": float(adv.detach()), "match": float(match.detach())}
        return record | extra | {"loss": float(loss.detach())}
