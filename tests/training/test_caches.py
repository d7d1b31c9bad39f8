"""Feature caches, data mixing and post-hoc EMA: round trips, MMAudio's cache layout, known answers."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from soundvcm.data.cache import CacheError, FeatureCache
from soundvcm.data.mixing import MixedSource, exposure
from soundvcm.data.mmaudio_cache import MMAudioCache
from soundvcm.training.posthoc_ema import PostHocEMA, sigma_rel_to_gamma, solve_weights, synthesize
from training_factory import DIMS, free_port, synthetic_cache, tiny_config, tiny_spec  # noqa: F401

_synthetic_cache = synthetic_cache
_config = tiny_config


@pytest.fixture(autouse=True)
def _test_encoder_set(tiny_encoder_set):
    """Register the tiny dimensions of training_factory as encoder set 'test' for every test here."""


# ----- caches ------------------------------------------------------------------------------
def test_cache_round_trip_and_corrupt_shard(tmp_path):
    root = _synthetic_cache(tmp_path / "c", rows=10)
    cache = FeatureCache(root)
    assert len(cache) == 10 and cache.meta.num_shards == 3
    from safetensors.torch import load_file

    stored = load_file(str(root / "shard_00001.safetensors"))
    assert torch.equal(cache.row(5)["clip"], stored["clip"][1])
    (root / "shard_00002.safetensors").write_bytes(b"garbage" * 10)
    fresh = FeatureCache(root)
    with pytest.raises(CacheError, match="shard_00002.safetensors: corrupt shard"):
        fresh.row(9)


def test_mismatched_caches_are_refused(tmp_path):
    a = _synthetic_cache(tmp_path / "a", rows=4)
    b = _synthetic_cache(tmp_path / "b", rows=4)
    meta = json.loads((b / "meta.json").read_text())
    meta["duration"] = 2.0
    (b / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CacheError, match="do not match: duration: 1.0 vs 2.0"):
        MixedSource.open([str(a), str(b)])


def test_reads_mmaudio_tensordict_cache(tmp_path):
    tensordict = pytest.importorskip("tensordict")
    data = {
        "mean": torch.randn(3, 250, 20), "std": torch.rand(3, 250, 20),
        "clip_features": torch.randn(3, 64, 1024), "sync_features": torch.randn(3, 192, 768),
        "text_features": torch.randn(3, 77, 1024),
    }  # fmt: skip
    tensordict.TensorDict(data, batch_size=[3]).memmap_(str(tmp_path / "vgg-val"))
    cache = MMAudioCache(tmp_path / "vgg-val")
    assert cache.meta.encoder_set == "mmaudio_16k" and cache.meta.has_video and len(cache) == 3
    row = cache.row(2)
    assert torch.equal(row["clip"], data["clip_features"][2]) and torch.equal(row["mean"], data["mean"][2])
    audio_only = {k: data[k] for k in ("mean", "std", "text_features")}
    tensordict.TensorDict(audio_only, batch_size=[3]).memmap_(str(tmp_path / "audiocaps"))
    caps = MixedSource.open([str(tmp_path / "vgg-val"), str(tmp_path / "audiocaps")])
    assert not caps.caches[1].meta.has_video
    (tmp_path / "audiocaps" / "mean.memmap").write_bytes(b"short")
    with pytest.raises(CacheError, match="mean.memmap: missing or truncated"):
        MMAudioCache(tmp_path / "audiocaps")


def test_mixing_weights_are_honoured(tmp_path):
    a = _synthetic_cache(tmp_path / "a", rows=40)
    b = _synthetic_cache(tmp_path / "b", rows=4, has_video=False, seed=1)
    equal = exposure(MixedSource.open([str(a), str(b)]), 4000)
    weighted = exposure(MixedSource.open([f"{a}:3", f"{b}:1"]), 4000)
    # equal exposure whatever the sizes (binomial sd ~0.008), and 3:1 when asked
    assert abs(equal[0] - 0.5) < 0.03 and abs(weighted[0] - 0.75) < 0.03


def test_text_audio_rows_get_null_visual_features(tmp_path):
    from soundvcm.network.mmdit import MMDiT
    from soundvcm.spec import preset_for_encoders

    b = _synthetic_cache(tmp_path / "b", rows=4, has_video=False)
    net = MMDiT(replace(preset_for_encoders("debug", "test")[0]))
    batch = MixedSource.open([str(b)]).batch(net, 3, torch.Generator().manual_seed(0))
    null = net.null_conditions(3)
    assert torch.equal(batch.conditions["clip"], null["clip"]) and batch.conditions["clip"].requires_grad


def test_a_source_can_keep_its_captions(tmp_path):
    """``PATH:WEIGHT:keep=text``: the batch marks that source's rows (Batch.kept), others are not;
    an unknown group or flag is refused."""
    from soundvcm.network.mmdit import MMDiT
    from soundvcm.spec import preset_for_encoders

    a = _synthetic_cache(tmp_path / "a", rows=6)
    b = _synthetic_cache(tmp_path / "b", rows=6, seed=1)
    net = MMDiT(replace(preset_for_encoders("debug", "test")[0]))
    source = MixedSource.open([f"{a}:1", f"{b}:1:keep=text"])
    g = torch.Generator().manual_seed(0)
    picks = source.draw(64, torch.Generator().manual_seed(0))
    batch = source.batch(net, 64, g)
    assert set(batch.kept) == {"text"}
    assert batch.kept["text"].tolist() == [s == 1 for s, _ in picks] and 0 < batch.kept["text"].sum() < 64
    assert MixedSource.open([str(a)]).batch(net, 4, torch.Generator().manual_seed(0)).kept == {}
    with pytest.raises(ValueError, match="keep=GROUP"):
        MixedSource.open([f"{a}:1:drop=text"])
    with pytest.raises(ValueError, match="network's groups"):
        MixedSource.open([f"{a}:1:keep=caption"]).batch(net, 2, torch.Generator().manual_seed(0))


# ----- EMA ---------------------------------------------------------------------------------
def test_posthoc_ema_known_answers(tmp_path):
    assert abs(sigma_rel_to_gamma(0.05) - 16.97) < 0.01  # EDM2's gamma for sigma_rel 0.05
    # reproducing one of the snapshots exactly: weight 1 on it
    w = solve_weights([100, 200, 200], [sigma_rel_to_gamma(0.05), sigma_rel_to_gamma(0.05), sigma_rel_to_gamma(0.1)],
                      200, sigma_rel_to_gamma(0.1))  # fmt: skip
    assert np.allclose(w, [0, 0, 1], atol=1e-6)
    net = torch.nn.Linear(1, 1, bias=False)
    ema = PostHocEMA(net, (0.05, 0.1), snapshot_every=10, folder=tmp_path)
    for step in range(1, 41):  # weight = step: the power EMA is a known weighted mean
        net.weight.data.fill_(float(step))
        ema.update(net)
    gamma = sigma_rel_to_gamma(0.05)
    steps = np.arange(1, 41, dtype=np.float64)
    # closed form at t = 40: theta_i weighs (i^(g+1) - (i-1)^(g+1)) / t^(g+1), about i^g (EDM2 Eq. 1)
    weights = steps ** (gamma + 1) - (steps - 1) ** (gamma + 1)
    expected = float((weights * steps).sum() / weights.sum())
    assert abs(float(ema.emas[0]["weight"]) - expected) < 1e-3
    synth, info = synthesize(tmp_path, 0.05, 40)
    assert abs(float(synth["weight"]) - expected) < 0.05 and info["snapshots"] == 8
    # a run stopped after its last snapshot (Ctrl-C at step 47): the export lands on that snapshot,
    # with weights summing to 1, instead of a scaled-down network (the weights once summed to 0.45)
    late, info = synthesize(tmp_path, 0.05, 47)
    assert info["step"] == 40 and abs(sum(json.loads(info["weights"])) - 1) < 0.02
    assert float(late["weight"]) == pytest.approx(float(synth["weight"]), rel=1e-6)
