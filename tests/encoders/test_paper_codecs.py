"""The paper's audio codec modules (mel VAE, BigVGAN 16 kHz and v2 44.1 kHz) against MMAudio's
own modules: full-size random-initialised weights rebuilt from a recorded rule, the recorded
official key lists, and reference outputs (tests/fixtures/audio_codec_reference.safetensors)."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from soundvcm.encoders.bigvgan import BIGVGAN_CONFIGS, BigVGAN, kaiser_sinc
from soundvcm.encoders.mel_vae import MelVAE
from soundvcm.weights import WeightsError, fold_weight_norm

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "audio_codec_reference.safetensors"


@pytest.fixture(scope="module")
def reference():
    with safe_open(FIXTURE, "pt") as f:
        keys = json.loads(f.metadata()["keys"])
    return load_file(FIXTURE), keys


def rule(key: str, shape, seed: int) -> torch.Tensor:
    """The weight rule of tests/fixtures/make_audio_codec_fixture.py.txt."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(key.encode()))
    x = torch.randn(tuple(shape), generator=g)
    if key.endswith(("weight_g", "original0")):
        return x.abs() * 0.1 + 0.2
    if key.endswith((".alpha", ".beta", "learnable_gain")):
        return x * 0.1
    return x * 0.05


def official_state(keys: dict, seed: int, buffers: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (rule(k, shape, seed) if kind == "param" else buffers[k]) for k, (shape, kind) in keys.items()}


@pytest.mark.parametrize("name, seed", [("16k", 1), ("44k", 2)])
def test_vae_matches_mmaudio(reference, name, seed):
    ref, keys = reference
    vae = MelVAE.from_config(name)
    buffers = {"data_mean": ref[f"vae_{name}.data_mean"], "data_std": ref[f"vae_{name}.data_std"]}
    state = official_state(keys[f"vae_{name}"], seed, buffers)
    assert set(state) == set(vae.state_dict())  # our key names are MMAudio's
    vae.load_official(state)
    with torch.no_grad():
        mean, std = vae.encode(ref[f"vae_{name}.mel"])
        decoded = vae.decode(ref[f"vae_{name}.mean"])
    assert (mean - ref[f"vae_{name}.mean"]).abs().max() < 1e-4
    assert torch.allclose(std, ref[f"vae_{name}.std"], rtol=1e-4, atol=1e-5)
    assert (decoded - ref[f"vae_{name}.decoded"]).abs().max() < 1e-4


def test_vae_refuses_inference_before_prepare_and_wrong_files():
    vae = MelVAE(data_dim=8, embed_dim=2, hidden=8)
    with pytest.raises(RuntimeError, match="prepare"):
        vae.encode(torch.zeros(1, 8, 4))
    state = vae.state_dict()
    state.pop("decoder.conv_out.weight")
    with pytest.raises(WeightsError, match="missing 1"):
        vae.load_official(state)


@pytest.mark.slow
@pytest.mark.parametrize("name, seed", [("bigvgan_16k", 3), ("bigvgan_44k", 4)])
def test_bigvgan_matches_mmaudio_full_size(reference, name, seed):
    ref, keys = reference
    voc = BigVGAN(BIGVGAN_CONFIGS[name.split("_")[1]])
    buffers = {k: v for k, v in voc.state_dict().items() if k.endswith(".filter")}
    state = official_state(keys[name], seed, buffers)
    assert set(fold_weight_norm(state)) == set(voc.state_dict())
    voc.load_official(state)
    with torch.no_grad():
        wave = voc(ref[f"{name}.mel"])
    assert wave.shape == ref[f"{name}.wave"].shape
    assert (wave - ref[f"{name}.wave"]).abs().max() < 1e-5


def test_anti_alias_filters_match(reference):
    ref, _ = reference
    assert torch.allclose(kaiser_sinc(0.25, 0.3, 12), ref["bigvgan.upsample_filter"], atol=1e-7)
    assert torch.allclose(kaiser_sinc(0.25, 0.3, 12), ref["bigvgan.lowpass_filter"], atol=1e-7)


def test_bigvgan_hop_and_weight_norm_formats():
    assert BIGVGAN_CONFIGS["16k"].hop == 256 and BIGVGAN_CONFIGS["44k"].hop == 512
    v = torch.randn(3, 2, 5)
    g = torch.rand(3, 1, 1) + 0.5
    old = fold_weight_norm({"c.weight_g": g, "c.weight_v": v})
    new = fold_weight_norm({"c.parametrizations.weight.original0": g, "c.parametrizations.weight.original1": v})
    assert torch.equal(old["c.weight"], new["c.weight"])
    with pytest.raises(WeightsError, match="only its g part"):
        fold_weight_norm({"c.weight_g": g})
