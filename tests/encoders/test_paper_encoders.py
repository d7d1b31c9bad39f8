"""The paper's visual and text encoders (CLIP DFN5B ViT-H-14-384 and Synchformer's MotionFormer)
against the original implementations: full-size key/shape lists recorded from open_clip and
MMAudio, tiny configurations with rule-built weights for the numerics, and CLIP's BPE tokenizer
on a cut-down merge table (tests/fixtures/README.md)."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from soundvcm.encoders.clip import CLIP, DFN5B_VIT_H_14_384, CLIPConfig
from soundvcm.encoders.clip_tokenizer import CLIPTokenizer
from soundvcm.encoders.motionformer import MotionFormer, MotionFormerConfig, sync_segments
from soundvcm.weights import load_strict

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PREFIX = "vfeat_extractor."


def _load(name: str):
    with safe_open(FIXTURES / name, "pt") as f:
        meta = f.metadata()
    return load_file(FIXTURES / name), meta


def _shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def _rule(key: str, shape, seed: int, norm_match) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(key.encode()))
    x = torch.randn(tuple(shape), generator=g)
    return 1 + 0.1 * x if norm_match(key) else x * 0.05


def _clip_norm(key: str) -> bool:
    return key.endswith(tuple(f"{n}.weight" for n in ("ln_1", "ln_2", "ln_pre", "ln_post", "ln_final")))


def test_clip_full_size_keys_match_open_clip():
    _, meta = _load("clip_reference.safetensors")
    with torch.device("meta"):
        ours = _shapes(CLIP(DFN5B_VIT_H_14_384))
    assert ours == json.loads(meta["full_keys"])  # 686 entries, 986.7M parameters


TINY_CLIP = CLIPConfig(
    embed_dim=32, image_size=42, patch_size=14, vision_width=64, vision_layers=2, vision_head_width=16,
    text_width=32, text_heads=4, text_layers=2,
)  # fmt: skip


def test_clip_numerics_match_open_clip():
    ref, meta = _load("clip_reference.safetensors")
    keys = json.loads(meta["tiny_keys"])
    model = CLIP(TINY_CLIP).eval()
    load_strict(model, {k: _rule(k, s, 7, _clip_norm) for k, s in keys.items()}, "tiny CLIP")
    with torch.no_grad():
        image = model.encode_image(ref["image_input"])
        text = model.encode_text(ref["tokens_real_bpe"])
    assert (image - ref["image_features"]).abs().max() < 1e-5
    assert (text - ref["text_features"]).abs().max() < 1e-5
    assert torch.allclose(text.norm(dim=-1), torch.ones(6, 77), atol=1e-5)  # all 77 states, normalised


def test_clip_tokenizer_matches_open_clip():
    ref, meta = _load("clip_reference.safetensors")
    tok = CLIPTokenizer(FIXTURES / "clip_bpe_small.txt.gz")
    texts = json.loads(meta["texts"])
    assert torch.equal(tok(texts), ref["tokens_small_bpe"])
    ids = tok(["a " * 200])[0]
    assert ids[0] == tok.sot and ids[-1] == tok.eot  # truncated to 77 with end-of-text kept


def test_motionformer_full_size_keys_match_mmaudio():
    _, meta = _load("motionformer_reference.safetensors")
    expected = {k[len(PREFIX) :]: s for k, s in json.loads(meta["full_keys"]).items()}
    with torch.device("meta"):
        ours = _shapes(MotionFormer())
    assert ours == expected  # 238 entries, 122.4M parameters


def test_motionformer_numerics_match_mmaudio():
    ref, meta = _load("motionformer_reference.safetensors")
    keys = json.loads(meta["tiny_keys"])
    model = MotionFormer(MotionFormerConfig(dim=64, depth=2, heads=4, patch=56)).eval()
    state = {
        k[len(PREFIX) :]: _rule(k, s, 9, lambda key: "norm" in key and key.endswith("weight")) for k, s in keys.items()
    }
    load_strict(model, state, "tiny MotionFormer")
    video = torch.rand(1, 2, 16, 3, 224, 224, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.no_grad():
        out = model(video.permute(0, 1, 3, 2, 4, 5).flatten(0, 1))  # (B*S, C, T, H, W)
    assert (out.view(1, 2, 8, 64) - ref["features"]).abs().max() < 1e-4


def test_sync_segments_layout():
    frames = torch.arange(40).view(1, 40, 1, 1, 1).float()
    segs = sync_segments(frames)  # (B, S, C, 16, H, W)
    assert segs.shape == (1, 4, 1, 16, 1, 1)
    assert segs[0, 2, 0, :, 0, 0].tolist() == list(range(16, 32))
    with pytest.raises(ValueError, match="at least 16 frames"):
        sync_segments(frames[:, :10])


def test_tiny_paper_set_runs_through_the_pipeline(tmp_path):
    """Plumbing of the paper's encoder set (structure, shapes, timelines) with tiny random modules."""
    from dataclasses import replace

    from media_factory import make_video
    from soundvcm.encoders.mmaudio_set import tiny_mmaudio_set
    from soundvcm.network.mmdit import MMDiT, network_preset
    from soundvcm.pipeline import Pipeline

    encoders = tiny_mmaudio_set("16k")
    spec = encoders.spec
    config = network_preset(
        "debug", clip_dim=spec.clip_dim, sync_dim=spec.sync_dim, text_dim=spec.text_dim, latent_dim=spec.latent_dim,
        text_seq_len=77,
        sequence=replace(spec.sequence, duration=1.0),
    )  # fmt: skip
    from soundvcm.spec import ModelSpec

    pipe = Pipeline(
        MMDiT(config).eval(), encoders, ModelSpec.create("debug", "mmaudio_16k", "vcm"), torch.device("cpu")
    )
    video = make_video(tmp_path / "v.mp4", duration=1.5, size=(80, 60))
    result = pipe.generate(video=video, prompt="a bell", duration=1.28)
    assert result.sample_rate == 16_000 and result.wave.numel() == int(round(1.28 * 16_000))
    mean, std = encoders.encode_audio(torch.randn(1, 16_384) * 0.1)  # 1 s of latents: 32 x 512 samples
    assert mean.shape == std.shape == (1, 32, 20) and (std > 0).all()  # 31.25 latents/s, 20 channels
