"""The full Synchformer (audio-visual offset classifier) for av-benchmark's DeSync, our own module.

* Video branch: MotionFormer (:mod:`soundvcm.encoders.motionformer`), 8 x 768 per 16-frame
  segment of 25 fps 224 x 224 frames.
* Audio branch: segments of 10,240 samples at 16 kHz with a hop of 5,120; power mel spectrogram
  (n_fft 1024, Hann window of 400 centred in it, hop 160, centred reflect padding, 128 HTK bands,
  no filter normalisation), log(x + 1e-6), padded to 66 frames, (x + 4.2677393) / (2 x 4.5689974).
  An AST (Audio Spectrogram Transformer: 16 x 16 patches with stride 10 over 128 x 66 -> 12 x 6,
  class and distillation tokens, 12 pre-LayerNorm blocks of width 768, eps 1e-12, final
  LayerNorm), then a frequency-aggregation layer (the class token of a pre-norm encoder layer
  over the 12 frequency patches): 6 x 768 per segment.
* Fusion: both projected (768 -> 768), LayerNorm'd, laid out as [OFF, 14 x 8 visual, MOD, 14 x 6
  audio] (198 tokens) with a learned position embedding, 3 GPT-style blocks (8 heads), final
  LayerNorm and a 21-way head on the OFF token: offsets from -2 to 2 s in 0.2 s steps.

DeSync (av-benchmark): the first and the last 14 segments (4.8 s) of a clip are classified; the
score is the mean |offset| in seconds. Weights: ``synchformer_state_dict.pth`` (registry name
``synchformer``), loaded strictly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from soundvcm.encoders.base import freeze, to_float_frames
from soundvcm.encoders.motionformer import (
    SYNC_MEAN,
    SYNC_STD,
    SYNCHFORMER_FILE,
    MotionFormer,
    SpatialAggregation,
    sync_segments,
)
from soundvcm.media.mel import mel_filterbank
from soundvcm.weights import WeightFile, load_strict, load_weights, module_shapes

AUDIO_SR, SEGMENT, SEGMENT_HOP = 16_000, 10_240, 5_120
N_FFT, WIN, HOP, MELS, SPEC_T = 1024, 400, 160, 128, 66
MEAN, STD = -4.2677393, 4.5689974
SEGMENTS = 14  # 4.8 s per comparison
GRID = torch.linspace(-2.0, 2.0, 21)


class ASTLayer(nn.Module):
    def __init__(self, d: int = 768, heads: int = 12, ffn: int = 3072, eps: float = 1e-12):
        super().__init__()
        self.heads = heads
        self.attention = nn.Module()
        self.attention.attention = nn.Module()
        for name in ("query", "key", "value"):
            setattr(self.attention.attention, name, nn.Linear(d, d))
        self.attention.output = nn.Module()
        self.attention.output.dense = nn.Linear(d, d)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(d, ffn)
        self.output = nn.Module()
        self.output.dense = nn.Linear(ffn, d)
        self.layernorm_before = nn.LayerNorm(d, eps=eps)
        self.layernorm_after = nn.LayerNorm(d, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        h = self.layernorm_before(x)
        a = self.attention.attention

        def split(t: Tensor) -> Tensor:
            return t.view(b, n, self.heads, d // self.heads).transpose(1, 2)

        y = F.scaled_dot_product_attention(split(a.query(h)), split(a.key(h)), split(a.value(h)))
        x = x + self.attention.output.dense(y.transpose(1, 2).reshape(b, n, d))
        return x + self.output.dense(F.gelu(self.intermediate.dense(self.layernorm_after(x))))


class AST(nn.Module):
    """HF ``ASTModel`` key names; input (N, 66 frames, 128 mels) -> (N, 2 + 12 x 6, 768)."""

    def __init__(self, d: int = 768, layers: int = 12, patch: int = 16, stride: int = 10):
        super().__init__()
        self.f = (MELS - patch) // stride + 1
        self.t = (SPEC_T - patch) // stride + 1
        self.embeddings = nn.Module()
        self.embeddings.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.embeddings.distillation_token = nn.Parameter(torch.zeros(1, 1, d))
        self.embeddings.position_embeddings = nn.Parameter(torch.zeros(1, self.f * self.t + 2, d))
        self.embeddings.patch_embeddings = nn.Module()
        self.embeddings.patch_embeddings.projection = nn.Conv2d(1, d, patch, stride=stride)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(ASTLayer(d) for _ in range(layers))
        self.layernorm = nn.LayerNorm(d, eps=1e-12)

    def forward(self, spec: Tensor) -> Tensor:
        e = self.embeddings
        x = e.patch_embeddings.projection(spec[:, None].transpose(2, 3)).flatten(2).transpose(1, 2)
        n = x.shape[0]
        x = torch.cat([e.cls_token.expand(n, -1, -1), e.distillation_token.expand(n, -1, -1), x], 1)
        x = x + e.position_embeddings
        for layer in self.encoder.layer:
            x = layer(x)
        return self.layernorm(x)


class AudioFeatures(nn.Module):
    """AST + frequency aggregation: (N, 66, 128) -> (N, 6, 768)."""

    def __init__(self):
        super().__init__()
        self.ast = AST()
        self.freq_attn_agg = SpatialAggregation(768, 12, 4)

    def forward(self, spec: Tensor) -> Tensor:
        x = self.ast(spec)[:, 2:]  # (N, f*t, D), frequency-major
        n, _, d = x.shape
        f, t = self.ast.f, self.ast.t
        x = x.view(n, f, t, d).transpose(1, 2).reshape(n * t, f, d)
        return self.freq_attn_agg(x).view(n, t, d)


class GPTBlock(nn.Module):
    def __init__(self, d: int = 768, heads: int = 8):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.ln2 = nn.LayerNorm(d)
        self.attn = nn.Module()
        for name in ("key", "query", "value", "proj"):
            setattr(self.attn, name, nn.Linear(d, d))
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d), nn.Dropout(0.0))

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        h = self.ln1(x)

        def split(t: Tensor) -> Tensor:
            return t.view(b, n, self.heads, d // self.heads).transpose(1, 2)

        a = self.attn
        y = F.scaled_dot_product_attention(split(a.query(h)), split(a.key(h)), split(a.value(h)))
        x = x + a.proj(y.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.ln2(x))


class GlobalTransformer(nn.Module):
    def __init__(self, d: int = 768, layers: int = 3, tokens: int = 198, classes: int = 21):
        super().__init__()
        self.vis_in_lnorm = nn.LayerNorm(d)
        self.aud_in_lnorm = nn.LayerNorm(d)
        self.OFF_tok = nn.Parameter(torch.randn(1, 1, d))
        self.MOD_tok = nn.Parameter(torch.randn(1, 1, d))
        self.pos_emb_cfg = nn.Module()
        self.pos_emb_cfg.pos_emb = nn.Parameter(torch.randn(1, tokens, d))
        self.blocks = nn.Sequential(*[GPTBlock(d) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(d)
        self.off_head = nn.Linear(d, classes)

    def forward(self, v: Tensor, a: Tensor) -> Tensor:
        b = v.shape[0]
        x = torch.cat(
            [
                self.OFF_tok.expand(b, -1, -1),
                self.vis_in_lnorm(v),
                self.MOD_tok.expand(b, -1, -1),
                self.aud_in_lnorm(a),
            ],
            dim=1,
        )
        x = self.ln_f(self.blocks(x + self.pos_emb_cfg.pos_emb))
        return self.off_head(x[:, 0])


class Synchformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.vfeat_extractor = MotionFormer()
        self.afeat_extractor = AudioFeatures()
        self.vproj = nn.Linear(768, 768)
        self.aproj = nn.Linear(768, 768)
        self.transformer = GlobalTransformer()

    def compare_v_a(self, vis: Tensor, aud: Tensor) -> Tensor:
        """(B, S, 8, D) visual and (B, S, 6, D) audio features -> (B, 21) offset logits."""
        b = vis.shape[0]
        return self.transformer(
            self.vproj(vis).reshape(b, -1, vis.shape[-1]), self.aproj(aud).reshape(b, -1, aud.shape[-1])
        )


def audio_segments(wave: Tensor) -> Tensor:
    """(B, samples) at 16 kHz -> (B, S, 66, 128) normalised log-mel segments."""
    count = (wave.shape[-1] - SEGMENT) // SEGMENT_HOP + 1
    segs = torch.stack([wave[:, i * SEGMENT_HOP : i * SEGMENT_HOP + SEGMENT] for i in range(count)], dim=1)
    b, s, n = segs.shape
    spec = torch.stft(
        segs.reshape(b * s, n),
        N_FFT,
        hop_length=HOP,
        win_length=WIN,
        window=torch.hann_window(WIN, device=wave.device),
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    power = spec.real.square() + spec.imag.square()
    fb = mel_filterbank(AUDIO_SR, N_FFT, MELS, 0.0, AUDIO_SR / 2, htk=True, norm=None).to(wave.device)
    mel = torch.log(fb @ power + 1e-6)
    mel = F.pad(mel, (0, max(0, SPEC_T - mel.shape[-1])))[..., :SPEC_T]
    mel = (mel - MEAN) / (2 * STD)
    return mel.view(b, s, MELS, SPEC_T).transpose(2, 3)


@torch.inference_mode()
def desync_seconds(model: Synchformer, frames: Tensor, wave: Tensor) -> float:
    """DeSync of one clip: uint8 (T, 3, 224, 224) frames at 25 fps and (samples,) audio at 16 kHz."""
    device = next(model.parameters()).device
    x = to_float_frames(frames, SYNC_MEAN, SYNC_STD)
    segs = sync_segments(x[None])  # (1, S, C, 16, H, W)
    vis = torch.cat([model.vfeat_extractor(s.to(device)) for s in segs[0].split(4)], 0)[None]
    aud_segs = audio_segments(wave[None].to(device))[0]
    aud = model.afeat_extractor(aud_segs)[None]
    count = min(vis.shape[1], aud.shape[1])
    if count < SEGMENTS:
        raise ValueError(f"DeSync needs {SEGMENTS} segments (4.8 s); the clip has {count}")
    scores = []
    for part in (slice(0, SEGMENTS), slice(count - SEGMENTS, count)):
        logits = model.compare_v_a(vis[:, part], aud[:, part])
        scores.append(abs(float(GRID[logits.argmax(-1)[0]])))
    return sum(scores) / len(scores)


def load_synchformer(path) -> Synchformer:
    net = Synchformer()
    load_strict(net, load_weights(path, "Synchformer"), "Synchformer")
    return freeze(net)


__all__ = ["GRID", "Synchformer", "audio_segments", "desync_seconds", "load_synchformer"]


SYNCHFORMER_WEIGHTS = WeightFile(**{**SYNCHFORMER_FILE.__dict__, "shapes": lambda: module_shapes(Synchformer())})
"""The file the encoder set declares, with the whole model's keys (DeSync uses all of it)."""
