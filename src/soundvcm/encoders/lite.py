"""The "lite" and "lite2" encoder sets: real pretrained weights from pip packages, run offline on a CPU.

* text: all-MiniLM-L6-v2, 77 L2-normalised token states, 384-d (:mod:`.minilm`);
* visual: EfficientNet-Lite0 pooled features of 224 x 224 frames at 8 fps, 1280-d (:mod:`.efficientnet_lite`);
* sync: motion energy on an 8 x 8 grid at 25 fps, Synchformer's token layout, 128-d (:mod:`.motion_sync`);
* audio: HiFi-GAN's own 22.05 kHz log-mel *is* the latent, two mel frames per latent frame
  (80 x 2 = 160 channels, 43.07 latents/s, 345 for 8 s: MMAudio-44k's sequence length), and the
  HiFi-GAN universal generator is the decoder (:mod:`.hifigan`).

``lite2`` (issue 23) keeps the text encoder and the latent, and changes the two video features:
sync tokens in time order, one per latent frame, carrying signed motion (:mod:`.motion_flow`:
a probe reads impacts from them at onset F1 0.79 against 0.50 for lite's tokens as the network
received them: BENCHMARKS.md), and visual frames at 160 px instead of 224 (the visual stage 2.3x
faster in fp32 and in bf16; BENCHMARKS.md). Models and caches of the ``lite`` set load as before
under its name.

Why the mel and not a small learned VAE (see docs/ARCHITECTURE.md): no audio VAE is available
offline, and one trained here on a few minutes of sound would be the weakest link; the mel is
exact (the only loss is the vocoder's), costs no training, and the pairing of frames keeps the
sequence as short as a VAE's. The price is 160 channels instead of 20-40, which only changes
the network's input and output projections. The posterior std of this "encoder" is zero.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from soundvcm import features
from soundvcm.encoders.base import EncoderSetSpec, autocast, chunked, freeze, to_float_frames
from soundvcm.encoders.efficientnet_lite import MEAN, STD, EfficientNetLite0
from soundvcm.encoders.hifigan import FAST_VOCODER, HiFiGAN, vocode_in_chunks
from soundvcm.encoders.mel_vae import MelVAE, MPConv1d
from soundvcm.encoders.minilm import MiniLMText
from soundvcm.encoders.motion_flow import MotionFlowSync
from soundvcm.encoders.motion_sync import MotionSync
from soundvcm.encoders.students import distilled_vocoder
from soundvcm.media.mel import MEL_HIFIGAN, mel_spectrogram
from soundvcm.media.video import FrameSpec
from soundvcm.precision import PrecisionPlan, amx_cpu

PATCH = 2  # mel frames per latent frame
assert features.LITE.sequence.latent_downsample == features.LITE2.sequence.latent_downsample == PATCH


def _build_lite(name: str) -> Callable[..., nn.Module]:
    def build(device, pretrained: bool = True, vocoder: str = "auto") -> nn.Module:
        return LiteEncoderSet(pretrained=pretrained, name=name, vocoder=vocoder).to(device)

    return build


def _weight_files(mel_vae: bool) -> Callable[[], dict]:
    def files() -> dict:
        from soundvcm.encoders import efficientnet_lite, hifigan, minilm
        from soundvcm.weights import package_dir

        out = {
            "minilm": package_dir(minilm.PACKAGE, "") / "model" / "model.safetensors",
            "efficientnet_lite0": package_dir(efficientnet_lite.PACKAGE, "")
            / "models"
            / "efficientnet-lite0-57934424.pth",
            "hifigan": package_dir(hifigan.PACKAGE, "") / "data" / "generator_universal.pth.tar",
        }
        if mel_vae:
            out["mel_vae"] = MEL_VAE.with_suffix(".safetensors")
        return out

    return files


LITE_SPEC = EncoderSetSpec.of(
    features.LITE,
    clip_frames=FrameSpec(fps=8.0, height=224, width=224, fit="squash"),
    sync_frames=FrameSpec(fps=25.0, height=64, width=64, fit="squash", gray=True),
    build=_build_lite("lite"),
    weight_files=_weight_files(False),
)
LITE2_SPEC = EncoderSetSpec.of(
    features.LITE2,
    clip_frames=FrameSpec(fps=8.0, height=160, width=160, fit="squash"),
    sync_frames=FrameSpec(fps=features.LITE2.sequence.sync_fps, height=64, width=64, fit="squash", gray=True),
    build=_build_lite("lite2"),
    weight_files=_weight_files(False),
    vocoders=("fast", "hifigan"),  # the distilled vocoder where it ships (issue 22), else V1 universal
)
# lite3 (issue 33): lite2's conditions and vocoder, and a compact learned latent: a small mel VAE
# trained on the open data (80 bands -> 20 channels at the same 43 Hz; soundvcm latent train)
LITE3_SPEC = EncoderSetSpec.of(
    features.LITE3,
    LITE2_SPEC.clip_frames,
    LITE2_SPEC.sync_frames,
    build=_build_lite("lite3"),
    weight_files=_weight_files(True),
    vocoders=LITE2_SPEC.vocoders,
)
LITE_SPECS = {"lite": LITE_SPEC, "lite2": LITE2_SPEC, "lite3": LITE3_SPEC}
MEL_VAE = Path(__file__).resolve().parent / "data" / "mel_vae_lite"  # STEM.safetensors + STEM.json


def load_mel_vae(stem: Path = MEL_VAE) -> MelVAE:
    """The lite3 set's mel VAE (folded weights, frozen), strictly loaded from ``stem``."""
    from soundvcm.weights import load_state_dict_strict, load_weights

    vae = MelVAE.from_config("lite")
    state = load_weights(stem.with_suffix(".safetensors"), "the lite3 mel VAE", "train one: soundvcm latent train")
    load_state_dict_strict(vae, state, source=str(stem))
    vae.prepared = True  # the file holds folded weights (soundvcm latent export)
    for m in vae.modules():
        if isinstance(m, MPConv1d):
            m.folded = True
    return freeze(vae)


def mel_to_latent(mel: Tensor) -> Tensor:
    """(B, 80, 2L) -> (B, L, 160): frames 2l and 2l + 1 side by side."""
    b, c, f = mel.shape
    return mel[..., : f - f % PATCH].view(b, c, -1, PATCH).permute(0, 2, 3, 1).reshape(b, -1, PATCH * c)


def latent_to_mel(latent: Tensor) -> Tensor:
    """Inverse of :func:`mel_to_latent`."""
    b, n, d = latent.shape
    return latent.view(b, n, PATCH, d // PATCH).permute(0, 3, 1, 2).reshape(b, d // PATCH, n * PATCH)


def load_vocoder(choice: str, name: str, pretrained: bool) -> tuple[nn.Module, str]:
    """(generator, what it is) for ``--vocoder``: ``hifigan`` (V1 universal, the reference), ``fast``
    (a distilled student shipped as package data), a student's export path (either kind:
    :func:`soundvcm.encoders.students.distilled_vocoder`), or ``auto``: the fast
    one where the set lists it and it ships, else HiFi-GAN (the set's spec says which it may use: lite
    keeps the vocoder its models were measured with)."""
    if choice == "auto":
        ships = {"fast": FAST_VOCODER.with_suffix(".safetensors").is_file(), "hifigan": True}
        choice = next(v for v in LITE_SPECS[name].vocoders if ships[v])
    if choice == "hifigan":
        return (HiFiGAN.pretrained() if pretrained else HiFiGAN()), "hifigan"
    stem = FAST_VOCODER if choice == "fast" else Path(choice)
    return distilled_vocoder(stem), "fast" if choice == "fast" else str(stem)


class LiteEncoderSet(nn.Module):
    def __init__(self, pretrained: bool = True, clip_chunk: int = 32, name: str = "lite", vocoder: str = "auto"):
        super().__init__()
        if name not in LITE_SPECS:
            raise ValueError(f"unknown lite encoder set {name!r}; one of {', '.join(LITE_SPECS)}")
        self.spec = LITE_SPECS[name]
        if pretrained:
            self.text = MiniLMText.pretrained()
            self.visual = EfficientNetLite0.pretrained()
        else:  # random initialisation, for tests of shapes and plumbing
            self.text, self.visual = MiniLMText(), EfficientNetLite0()
        self.vocoder, self.vocoder_name = load_vocoder(vocoder, name, pretrained)
        # lite2 and lite3 read motion frame by frame (the "frames" sync layout); lite in segments
        self.sync: nn.Module = MotionFlowSync() if self.spec.sequence.sync_layout == "frames" else MotionSync()
        # the latent: HiFi-GAN's mel itself (160 channels), or a mel VAE's (lite3)
        self.vae: MelVAE | None = None
        if self.spec.latent_dim != 80 * PATCH:
            self.vae = load_mel_vae() if pretrained else MelVAE.from_config("lite").prepare()
        self.clip_chunk = clip_chunk
        # autocast dtypes per stage (None: fp32), set from a PrecisionPlan by set_precision: bf16 only
        # where the CPU computes it natively and it measures faster (soundvcm.precision); on such a CPU
        # the visual encoder runs 2.9x and the vocoder 2.2x faster in bf16 (per-frame cosine 0.998 to
        # fp32 features, resynthesis log-mel L1 unchanged: BENCHMARKS.md), on an AVX2-only CPU 40x slower
        self.dtype: torch.dtype | None = None  # the text encoder
        self.visual_dtype: torch.dtype | None = None
        self.vocoder_dtype: torch.dtype | None = None
        self.visual.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # ~1.8x faster on CPU
        freeze(self)

    @property
    def device(self) -> torch.device:
        return self.visual._fc.weight.device

    def set_precision(self, plan: PrecisionPlan) -> None:
        """Run each encoder as ``plan`` says (visual, text, vocoder)."""
        self.visual_dtype, self.dtype, self.vocoder_dtype = (
            plan.dtype("visual"),
            plan.dtype("text"),
            plan.dtype("vocoder"),
        )

    @torch.inference_mode()
    def encode_clip(self, frames: Tensor) -> Tensor:
        """uint8 (B, T, 3, S, S) at 8 fps (S = 224 for lite, 160 for lite2) -> (B, T, 1280), L2-normalised."""
        b, t = frames.shape[:2]

        def run(x: Tensor) -> Tensor:
            x = to_float_frames(x.to(self.device), MEAN, STD).contiguous(memory_format=torch.channels_last)
            with autocast(self.device, self.visual_dtype):
                return self.visual.features(x).float()

        feats = chunked(run, frames.flatten(0, 1), self.clip_chunk)
        return torch.nn.functional.normalize(feats, dim=-1).view(b, t, -1)

    @torch.inference_mode()
    def encode_sync(self, frames: Tensor) -> Tensor:
        """lite: uint8 (B, T, 1, 64, 64) at 25 fps -> (B, 8 * ((T - 16) // 8 + 1), 128); lite2: at
        86.13 fps -> (B, T // 2, 192), one token per latent frame."""
        return self.sync(frames.to(self.device))

    @torch.inference_mode()
    def encode_text(self, texts: list[str]) -> Tensor:
        with autocast(self.device, self.dtype):
            return self.text.encode(list(texts)).float()

    @torch.inference_mode()
    def encode_audio(self, wave: Tensor) -> tuple[Tensor, Tensor]:
        """(B, samples) at 22.05 kHz -> latent posterior (mean, std), each (B, L, 160) (the mel pairs,
        std 0) or (B, L, 20) (lite3: the mel VAE's posterior)."""
        mel = mel_spectrogram(wave.to(self.device), MEL_HIFIGAN)
        if self.vae is not None:
            mean, std = self.vae.encode(mel[..., : mel.shape[-1] - mel.shape[-1] % PATCH])
            return mean.transpose(1, 2), std.transpose(1, 2)
        mean = mel_to_latent(mel)
        return mean, torch.zeros_like(mean)

    @torch.inference_mode()
    def decode_latent(self, latent: Tensor) -> Tensor:
        """(B, L, C) latent -> (B, 80, 2L) log-mel (lite, lite2: a reshape; lite3: the VAE's decoder)."""
        latent = latent.to(self.device).float()
        if self.vae is not None:
            return self.vae.decode(latent.transpose(1, 2))
        return latent_to_mel(latent)

    @torch.inference_mode()
    def vocode(self, mel: Tensor) -> Tensor:
        """(B, 80, F) log-mel -> (B, F * 256) waveform at 22.05 kHz. In bf16 on AMX, windows of 160
        frames (:func:`soundvcm.encoders.hifigan.vocode_in_chunks`, 128 + 2 x 16 of context): oneDNN's
        AMX kernels pay several warm calls' time at each new input length, so one short length serves
        every clip (8 s, Sapphire Rapids, 2 threads, channels-last: 1.19 s cold / 0.63 s warm against
        2.48 / 0.39 s in one pass and 1.19 / 0.84 s in windows of 96; a CLI run vocodes once, cold).
        Elsewhere one pass: in fp32 there is no such cost, and with bf16 without AMX (Zen 4) one pass
        is faster cold and warm (V1, 8 s: 0.78 / 0.57 s against 0.89 / 0.83 s in windows; issue 35);
        on a GPU one pass."""
        window: int | None = getattr(type(self.vocoder), "bf16_window", None)  # None: one pass (iSTFT vocoder)
        with autocast(self.device, self.vocoder_dtype):
            bf16 = self.vocoder_dtype == torch.bfloat16 and self.device.type == "cpu"
            if mel.shape[0] != 1 or not bf16 or window is None or not amx_cpu():
                return self.vocoder(mel).float()
            return vocode_in_chunks(lambda m: self.vocoder(m).float(), mel, HiFiGAN.hop_length, chunk=window)[None]

    def decode_audio(self, latent: Tensor) -> Tensor:
        """(B, L, 160) -> (B, L * 512) waveform at 22.05 kHz."""
        return self.vocode(self.decode_latent(latent))
