"""The paper's encoder set (MMAudio's): CLIP DFN5B ViT-H-14-384, Synchformer's MotionFormer, the
mel VAE and BigVGAN, each our own module loading the official files strictly.

* visual: 8 fps frames squashed to 384 x 384 (bicubic), OpenAI mean/std, CLIP image features
  (B, T, 1024), L2-normalised;
* sync: 25 fps frames, short side to 224 + centre crop, mean = std = 0.5, segments of 16 frames
  with a step of 8, 8 MotionFormer tokens each: (B, 8 S, 768);
* text: CLIP BPE (77 tokens), all ``ln_final`` states, L2-normalised: (B, 77, 1024);
* audio: log-mel (16 kHz: 80 bands, log10; 44.1 kHz: 128 bands, ln) -> VAE posterior (mean,
  std) (B, L, 20 or 40); decode: VAE decoder -> mel -> BigVGAN (16 kHz) / BigVGAN-v2 (44.1 kHz).

Weights come from the registry (:mod:`.weights`); a missing file is reported with the command
that fetches it. Tests build the same classes at full size on the meta device (key lists) and
at tiny sizes (numerics, pipeline plumbing).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor, nn

from soundvcm import features
from soundvcm.encoders.base import EncoderSetSpec, autocast, chunked, freeze, to_float_frames
from soundvcm.encoders.bigvgan import BIGVGAN_CONFIGS, BIGVGAN_WEIGHTS, BigVGAN
from soundvcm.encoders.clip import CLIP, CLIP_WEIGHTS, OPENAI_MEAN, OPENAI_STD
from soundvcm.encoders.clip_tokenizer import CLIP_BPE, CLIPTokenizer
from soundvcm.encoders.mel_vae import VAE_WEIGHTS, MelVAE
from soundvcm.encoders.motionformer import SYNC_MEAN, SYNC_STD, SYNCHFORMER_FILE, MotionFormer, sync_segments
from soundvcm.media.mel import MEL_16K, MEL_44K, MelConfig, mel_spectrogram
from soundvcm.media.video import FrameSpec
from soundvcm.precision import PrecisionPlan
from soundvcm.weights import RELEASES, WeightFile, WeightsError, load_strict, load_weights, resolve

CLIP_FRAMES = FrameSpec(fps=8.0, height=384, width=384, fit="squash")
SYNC_FRAMES = FrameSpec(fps=25.0, height=224, width=224, fit="crop")
MELS = {"16k": MEL_16K, "44k": MEL_44K}


def _build(mode: str):
    def build(device, pretrained: bool = True, vocoder: str = "auto") -> nn.Module:
        if not pretrained:
            raise ValueError(
                "the paper's encoder set has no random-initialised variant at full size; "
                "use soundvcm.encoders.mmaudio_set.tiny_mmaudio_set() for plumbing tests"
            )
        try:
            return MMAudioEncoderSet.pretrained(mode).to(device)
        except WeightsError as exc:
            raise WeightsError(f"{exc} (all files of the '{mode}' set: {missing_weights_hint(mode)})") from exc

    return build


def _files(mode: str):
    def files() -> dict:
        return {
            w.name: w.md5 or "unpublished" for role, w in set_files(mode).items() if role in ("clip", "sync", "vae")
        }

    return files


MMAUDIO_SPECS = {
    mode: EncoderSetSpec.of(
        sizes,
        CLIP_FRAMES,
        SYNC_FRAMES,
        n_mels=MELS[mode].n_mels,
        offline=False,
        vocoders=("bigvgan",),  # MMAudio's own (16 kHz: BigVGAN from its release; 44.1 kHz: BigVGAN-v2)
        build=_build(mode),
        weight_files=_files(mode),
    )
    for mode, sizes in (("16k", features.MMAUDIO_16K), ("44k", features.MMAUDIO_44K))
}
EMPTY_STRING = WeightFile(
    "empty_string",
    "empty_string.pth",
    f"{RELEASES}/empty_string.pth",
    None,
    "CLIP text features of the empty string (MMAudio's frozen null text)",
)


def set_files(mode: str) -> dict[str, WeightFile]:
    """The official files of the 16k or 44k set, by role."""
    return {
        "clip": CLIP_WEIGHTS,
        "bpe": CLIP_BPE,
        "sync": SYNCHFORMER_FILE,
        "vae": VAE_WEIGHTS[mode],
        "vocoder": BIGVGAN_WEIGHTS[mode],
    }


class MMAudioEncoderSet(nn.Module):
    def __init__(
        self,
        spec: EncoderSetSpec,
        mel: MelConfig,
        clip: CLIP,
        tokenizer: CLIPTokenizer | _ByteTokenizer,
        motionformer: MotionFormer,
        vae: MelVAE,
        vocoder: BigVGAN,
        chunk: int = 32,
    ):
        super().__init__()
        self.spec, self.mel = spec, mel
        self.clip, self.tokenizer, self.motionformer = clip, tokenizer, motionformer
        self.vae, self.vocoder = vae, vocoder
        self.chunk = chunk
        self.dtype: torch.dtype | None = None  # visual, sync and text encoders
        self.vocoder_dtype: torch.dtype | None = None  # VAE decoder and BigVGAN
        freeze(self)

    def set_precision(self, plan: PrecisionPlan) -> None:
        """Run each encoder as ``plan`` says (the visual stage's choice covers CLIP, Synchformer and text)."""
        self.dtype, self.vocoder_dtype = plan.dtype("visual"), plan.dtype("vocoder")

    @classmethod
    def pretrained(cls, mode: str = "16k", directory: Path | None = None) -> MMAudioEncoderSet:
        """Load every official file (md5-checked where upstream publishes one) strictly."""
        paths = {role: resolve(w, directory) for role, w in set_files(mode).items()}
        clip = CLIP()
        load_strict(clip, load_weights(paths["clip"], "CLIP DFN5B"), "CLIP DFN5B")
        sync_state = load_weights(paths["sync"], "Synchformer")
        prefix = "vfeat_extractor."
        motionformer = MotionFormer()
        load_strict(
            motionformer,
            {k[len(prefix) :]: v for k, v in sync_state.items() if k.startswith(prefix)},
            "Synchformer (vfeat_extractor)",
        )
        vae = MelVAE.from_config(mode).load_official(load_weights(paths["vae"], "mel VAE"))
        voc_state: dict = load_weights(paths["vocoder"], "BigVGAN")
        if isinstance(voc_state, dict) and "generator" in voc_state:
            voc_state = voc_state["generator"]
        vocoder = BigVGAN(BIGVGAN_CONFIGS[mode])
        vocoder.load_official(voc_state)
        return cls(MMAUDIO_SPECS[mode], MELS[mode], clip, CLIPTokenizer(paths["bpe"]), motionformer, vae, vocoder)

    @property
    def device(self) -> torch.device:
        return self.clip.token_embedding.weight.device

    @torch.inference_mode()
    def encode_clip(self, frames: Tensor) -> Tensor:
        """uint8 (B, T, 3, 384, 384) -> (B, T, 1024)."""
        b, t = frames.shape[:2]

        def run(x: Tensor) -> Tensor:
            with autocast(self.device, self.dtype):
                return self.clip.encode_image(to_float_frames(x.to(self.device), OPENAI_MEAN, OPENAI_STD)).float()

        return chunked(run, frames.flatten(0, 1), self.chunk).view(b, t, -1)

    @torch.inference_mode()
    def encode_sync(self, frames: Tensor) -> Tensor:
        """uint8 (B, T, 3, 224, 224) at 25 fps -> (B, 8 S, 768)."""
        segs = sync_segments(frames)  # (B, S, C, 16, H, W)
        b, s = segs.shape[:2]

        def run(x: Tensor) -> Tensor:
            with autocast(self.device, self.dtype):
                x = to_float_frames(x.to(self.device).transpose(1, 2), SYNC_MEAN, SYNC_STD).transpose(1, 2)
                return self.motionformer(x).float()

        out = chunked(run, segs.flatten(0, 1), max(1, self.chunk // 8))  # (B*S, 8, D)
        return out.reshape(b, s * out.shape[1], -1)

    @torch.inference_mode()
    def encode_text(self, texts: list[str]) -> Tensor:
        tokens = self.tokenizer(list(texts)).to(self.device)
        with autocast(self.device, self.dtype):
            return self.clip.encode_text(tokens).float()

    @torch.inference_mode()
    def encode_audio(self, wave: Tensor) -> tuple[Tensor, Tensor]:
        """(B, samples) -> latent posterior (mean, std), (B, L, latent_dim) each."""
        mel = mel_spectrogram(wave.to(self.device), self.mel)
        mean, std = self.vae.encode(mel)
        return mean.transpose(1, 2), std.transpose(1, 2)

    @torch.inference_mode()
    def decode_latent(self, latent: Tensor) -> Tensor:
        return self.vae.decode(latent.to(self.device).float().transpose(1, 2))

    @torch.inference_mode()
    def vocode(self, mel: Tensor) -> Tensor:
        with autocast(self.device, self.vocoder_dtype):
            return self.vocoder(mel).float()

    def decode_audio(self, latent: Tensor) -> Tensor:
        return self.vocode(self.decode_latent(latent))


def tiny_mmaudio_set(mode: str = "16k") -> MMAudioEncoderSet:
    """Random-initialised, tiny modules with the paper set's structure (tests and smoke runs)."""
    from soundvcm.encoders.bigvgan import BigVGANConfig
    from soundvcm.encoders.clip import CLIPConfig
    from soundvcm.encoders.motionformer import MotionFormerConfig

    mel = MELS[mode]
    clip = CLIP(
        CLIPConfig(
            embed_dim=32,
            image_size=42,
            patch_size=14,
            vision_width=64,
            vision_layers=1,
            vision_head_width=16,
            text_width=32,
            text_heads=4,
            text_layers=1,
        )
    )
    motionformer = MotionFormer(MotionFormerConfig(dim=64, depth=1, heads=4, patch=56))
    latent = 20 if mode == "16k" else 40
    vae = MelVAE(data_dim=mel.n_mels, embed_dim=latent, hidden=8).prepare()
    rates = (4, 4, 4, 4) if mel.hop_length == 256 else (8, 4, 4, 4)
    vocoder = BigVGAN(BigVGANConfig(mel.n_mels, rates, tuple(2 * r for r in rates), 16))
    base = MMAUDIO_SPECS[mode]
    spec = replace(
        base,
        name=f"{base.name}-tiny",
        clip_dim=32,
        sync_dim=64,
        text_dim=32,
        clip_frames=replace(CLIP_FRAMES, height=42, width=42),
    )
    tokenizer = _ByteTokenizer()
    return MMAudioEncoderSet(spec, mel, clip, tokenizer, motionformer, vae, vocoder)


class _ByteTokenizer:
    """A stand-in for CLIP's BPE in tiny sets (no vocabulary file needed)."""

    sot, eot = 49406, 49407

    def __call__(self, texts: list[str]) -> Tensor:
        out = torch.zeros(len(texts), 77, dtype=torch.long)
        for i, t in enumerate(texts):
            ids = [self.sot, *list(t.encode())[:75], self.eot]
            out[i, : len(ids)] = torch.tensor(ids)
        return out


def missing_weights_hint(mode: str) -> str:
    return "soundvcm weights download " + " ".join(w.name for w in set_files(mode).values())


__all__ = ["MMAUDIO_SPECS", "MMAudioEncoderSet", "WeightsError", "missing_weights_hint", "tiny_mmaudio_set"]
