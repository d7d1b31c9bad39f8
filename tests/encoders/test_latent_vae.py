"""The lite3 set's learned mel latent (issue 33): training, export, folding, and lite2 -> lite3 caches."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from soundvcm.data.cache import CacheMeta, FeatureCache, write_shard
from soundvcm.encoders.lite import LITE2_SPEC, LITE3_SPEC, LiteEncoderSet, latent_to_mel, load_mel_vae, mel_to_latent
from soundvcm.training.latent_vae import VAETrainConfig, cache_mels, export, train_vae, transcode

FRAMES = 64  # mel frames per row (0.74 s)


def _mels(n: int, seed: int = 0) -> torch.Tensor:
    """Log-mels with structure a VAE can learn: a per-row spectral tilt plus a few decaying bursts."""
    g = torch.Generator().manual_seed(seed)
    bands = torch.linspace(0, 1, 80).view(1, 80, 1)
    tilt = -4 - 4 * bands * torch.rand(n, 1, 1, generator=g)
    t = torch.arange(FRAMES).view(1, 1, -1)
    onset = torch.randint(0, FRAMES - 8, (n, 1, 1), generator=g)
    burst = torch.where(t >= onset, torch.exp(-(t - onset) / 6.0), torch.zeros(()))
    centre = torch.rand(n, 1, 1, generator=g)
    shape = torch.exp(-((bands - centre) ** 2) / 0.02)
    return tilt + 5 * burst * shape + 0.05 * torch.randn(n, 80, FRAMES, generator=g)


def _lite2_cache(root: Path, mels: torch.Tensor, per_shard: int = 8) -> Path:
    n = len(mels)
    meta = CacheMeta("lite2", 22_050, 8.0, 86.13, FRAMES * 256 / 22_050, [FRAMES // 2, 160], [3, 1280],
                     [FRAMES // 2, 192], [77, 384], True, n, per_shard)  # fmt: skip
    root.mkdir(parents=True)
    meta.save(root)
    g = torch.Generator().manual_seed(1)
    for shard in range(meta.num_shards):
        rows = mels[shard * per_shard : (shard + 1) * per_shard]
        k = len(rows)
        tensors = {
            "mean": mel_to_latent(rows), "std": torch.zeros(k, FRAMES // 2, 160),
            "clip": torch.randn(k, 3, 1280, generator=g), "sync": torch.randn(k, FRAMES // 2, 192, generator=g),
            "text": torch.randn(k, 77, 384, generator=g),
        }  # fmt: skip
        ids = [f"r{shard * per_shard + i}" for i in range(k)]
        write_shard(root, shard, tensors, ids, ["x"] * k, [True] * k)
    return root


CFG = VAETrainConfig(steps=150, batch=8, frames=32, lr=3e-3, warmup=10, val_rows=8, log_every=50, checkpoint_every=50)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, torch.Tensor]:
    root = tmp_path_factory.mktemp("vae")
    mels = _mels(48)
    cache = _lite2_cache(root / "cache", mels)
    train_vae([cache], root / "run", CFG)
    return root, cache, mels


def test_the_caches_hold_the_exact_mels():
    mels = _mels(3)
    assert torch.equal(latent_to_mel(mel_to_latent(mels)), mels)


def test_training_learns_and_resumes(trained):
    root, cache, mels = trained
    assert torch.allclose(cache_mels([cache]).float(), mels, atol=2e-2)  # stored in fp16
    log = [json.loads(line) for line in (root / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [50, 100, 150]
    baseline = float((mels[:8] - mels[:8].mean(dim=(0, 2), keepdim=True)).abs().mean())  # the band means alone
    assert log[-1]["val_l1"] < 0.5 * baseline and log[-1]["val_l1"] < log[0]["val_l1"]
    before = (root / "run" / "checkpoint.safetensors").read_bytes()
    train_vae([cache], root / "run", CFG)  # a rerun of a finished run: nothing to do
    assert (root / "run" / "checkpoint.safetensors").read_bytes() == before
    train_vae([cache], root / "run", replace(CFG, steps=160))  # more steps: it continues from 150
    assert json.loads((root / "run" / "checkpoint.json").read_text())["step"] == 160


def test_exported_weights_fold_the_normalisation_and_decode_the_same(trained, tmp_path):
    root, cache, mels = trained
    weights, config = export(root / "run", tmp_path / "vae")
    assert json.loads(config.read_text())["size"] == "lite"
    folded = load_mel_vae(tmp_path / "vae")
    from safetensors.torch import load_file

    from soundvcm.encoders.mel_vae import MelVAE

    unfolded = MelVAE.from_config("lite")  # the training form: normalised in every forward
    unfolded.load_state_dict(
        {k[4:]: v for k, v in load_file(str(root / "run" / "checkpoint.safetensors")).items() if k.startswith("vae.")}
    )
    with torch.no_grad():
        mean, _ = unfolded.posterior(mels[:4])
        expected = unfolded.reconstruct(mean)
        got_mean, std = folded.encode(mels[:4])
        got = folded.decode(got_mean)
    assert torch.allclose(got_mean, mean, atol=1e-4) and torch.allclose(got, expected, atol=1e-3)
    assert got_mean.shape == (4, 20, FRAMES // 2) and (std > 0).all()


def test_a_lite3_cache_from_a_lite2_cache(trained, tmp_path):
    root, cache, mels = trained
    export(root / "run", tmp_path / "vae")
    out = transcode(cache, tmp_path / "lite3", tmp_path / "vae")
    meta = CacheMeta.load(out)
    assert meta.encoder_set == "lite3" and meta.latent_shape == [FRAMES // 2, 20] and "mel_vae" in meta.weight_hashes
    source, target = FeatureCache(cache), FeatureCache(out)
    vae = load_mel_vae(tmp_path / "vae")
    assert len(source) == len(target) == len(mels)
    for i in (0, 9, 47):
        a, b = source.row(i), target.row(i)
        assert all(torch.equal(a[k], b[k]) for k in ("clip", "sync", "text"))
        mean, _ = vae.encode(latent_to_mel(a["mean"][None].float()))
        assert torch.allclose(b["mean"], mean[0].T, atol=1e-5) and b["mean"].shape == (FRAMES // 2, 20)
    with pytest.raises(ValueError, match="transcode reads lite2 caches"):
        transcode(out, tmp_path / "again", tmp_path / "vae")


def test_the_lite3_set_encodes_and_decodes_through_the_vae():
    assert LITE3_SPEC.latent_dim == 20 and LITE3_SPEC.sequence == LITE2_SPEC.sequence
    encoders = LiteEncoderSet(pretrained=False, name="lite3")
    wave = torch.randn(1, 22_050) * 0.1
    mean, std = encoders.encode_audio(wave)
    assert mean.shape == std.shape == (1, 43, 20)
    assert encoders.decode_latent(mean).shape == (1, 80, 86)
    assert LiteEncoderSet(pretrained=False, name="lite2").vae is None
