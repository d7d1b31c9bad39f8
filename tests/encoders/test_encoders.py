"""Encoders: the lite set against reference outputs of the original implementations (real
offline weights), strict loading, the motion-sync design, the mel latent, and the weight registry."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from soundvcm import registry
from soundvcm.encoders import ENCODER_SPECS, WeightsError, encoder_spec, load_encoder_set
from soundvcm.encoders.efficientnet_lite import EfficientNetLite0
from soundvcm.encoders.hifigan import HiFiGAN
from soundvcm.encoders.lite import latent_to_mel, mel_to_latent
from soundvcm.encoders.minilm import MiniLMText
from soundvcm.encoders.motion_sync import MotionSync
from soundvcm.media.mel import MEL_HIFIGAN, mel_spectrogram
from soundvcm.network.mmdit import MMDiT
from soundvcm.spec import preset_for_encoders
from soundvcm.weights import fold_weight_norm

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def reference():
    return load_file(FIXTURES / "lite_reference.safetensors")


@pytest.fixture(scope="module")
def lite():
    return load_encoder_set("lite")


TEXTS = ["dog barking", "puppy yelping", "car engine"]


def test_minilm_matches_transformers(lite, reference):
    ids, mask = lite.text.tokenize(TEXTS)
    assert torch.equal(ids[:, :8], reference["minilm.ids"])
    with torch.inference_mode():
        states = lite.text(ids, mask)
    assert (states[:, :8] - reference["minilm.states_first8"]).abs().max() < 1e-4
    sentence = lite.text.sentence_embedding(TEXTS)
    assert (sentence - reference["minilm.sentence"]).abs().max() < 1e-5
    sim = sentence @ sentence.T
    assert sim[0, 1] > sim[0, 2] + 0.1  # barking dog is nearer a yelping puppy than a car


def test_text_features_are_77_normalised_tokens(lite):
    feats = lite.encode_text(["a door slams", "rain on a tin roof"])
    assert feats.shape == (2, 77, 384)
    assert torch.allclose(feats.norm(dim=-1), torch.ones(2, 77), atol=1e-4)
    long = lite.encode_text(["word " * 200])  # truncated, not an error
    assert long.shape == (1, 77, 384)


def test_efficientnet_matches_reference_port(lite, reference):
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.inference_mode():
        feats = lite.visual.features(x.contiguous(memory_format=torch.channels_last))
        logits = lite.visual._fc(feats)
    assert (feats - reference["effnet.features"]).abs().max() < 1e-4
    assert (logits - reference["effnet.logits"]).abs().max() < 1e-3


def test_clip_features_shape_norm_and_batch_consistency(lite):
    frames = torch.randint(0, 256, (2, 5, 3, 224, 224), dtype=torch.uint8)
    feats = lite.encode_clip(frames)
    assert feats.shape == (2, 5, 1280)
    assert torch.allclose(feats.norm(dim=-1), torch.ones(2, 5), atol=1e-4)
    single = lite.encode_clip(frames[1:, 2:3])
    assert (single[0, 0] - feats[1, 2]).abs().max() < 1e-4  # batching does not change a frame's feature


def test_hifigan_matches_original_and_folds_weight_norm(lite, reference):
    with torch.inference_mode():
        wave = lite.vocoder(reference["hifigan.mel"])
    assert (wave - reference["hifigan.wave"]).abs().max() < 1e-5
    v = torch.randn(4, 3, 5)
    g = torch.rand(4, 1, 1) + 0.5
    folded = fold_weight_norm({"c.weight_v": v, "c.weight_g": g, "c.bias": torch.zeros(4)})
    assert set(folded) == {"c.weight", "c.bias"}
    assert torch.allclose(folded["c.weight"].flatten(1).norm(dim=1), g.flatten(), atol=1e-6)


def test_hifigan_runs_channels_last_whatever_the_mels_strides(monkeypatch):
    """Every conv of the vocoder reads and writes (B, C, 1, T) channels-last, also for a mel view whose
    strides only look channels-last (a window of a transposed latent, batch stride 80): such a view
    once sent the whole pass to the plain layout (2.3x slower in bf16). Same wave either way."""
    import soundvcm.encoders.hifigan as hifigan

    torch.manual_seed(0)
    net = HiFiGAN(channels=32, resblock_kernels=(3,), resblock_dilations=((1, 3, 5),)).eval()
    base = torch.randn(1, 200, 80, generator=torch.Generator().manual_seed(1)).transpose(1, 2) - 5
    view = torch.as_strided(base.clone(memory_format=torch.preserve_format), (1, 80, 200), (80, 1, 80))[..., 20:180]
    outputs, conv_nwc = [], hifigan.conv_nwc

    def spy(conv, x):
        outputs.append(y := conv_nwc(conv, x))
        return y

    monkeypatch.setattr(hifigan, "conv_nwc", spy)
    with torch.inference_mode():
        wave = net(view)
        plain = net(view.contiguous())
    assert len(outputs) == 2 * (1 + 4 + 4 * 6 + 1)  # pre, 4 ups, 4 stages x 3 pairs x 2, post
    assert all(y.is_contiguous(memory_format=torch.channels_last) for y in outputs if y.shape[1] > 1)
    assert torch.equal(wave, plain) and wave.shape == (1, 160 * 256)


def test_hifigan_runs_its_last_stages_in_fp32_under_a_bf16_autocast(monkeypatch):
    """Under a bf16 autocast only the input conv and the first ``bf16_stages`` stages compute in bf16,
    the later stages and the output conv in fp32 (bf16 in the last two cost SFX's ceiling 1.31x FD; issue 35);
    without an autocast nothing is cast (the forward pass opens no autocast of its own)."""
    import soundvcm.encoders.hifigan as hifigan

    torch.manual_seed(0)
    net = HiFiGAN(channels=32, resblock_kernels=(3,), resblock_dilations=((1, 3, 5),)).eval()
    mel = torch.randn(1, 80, 12) - 5
    dtypes, conv_nwc = [], hifigan.conv_nwc

    def spy(conv, x):
        dtypes.append((y := conv_nwc(conv, x)).dtype)
        return y

    monkeypatch.setattr(hifigan, "conv_nwc", spy)
    per_stage = 1 + 6  # the transposed conv, then one residual block of 3 dilated pairs
    with torch.inference_mode():
        fp32 = net(mel)
        assert dtypes == [torch.float32] * (1 + 4 * per_stage + 1)
        for stages in (2, 0, 4):
            dtypes.clear()
            net.bf16_stages = stages
            with torch.autocast("cpu", torch.bfloat16):
                wave = net(mel)
            in_bf16 = 1 + stages * per_stage  # the output conv always in fp32 (one channel: cheap)
            assert dtypes == [torch.bfloat16] * in_bf16 + [torch.float32] * (4 * per_stage + 2 - in_bf16)
            assert wave.dtype == torch.float32
            # every rounding to bf16 (2^-9 of each input) stays far below the wave's own scale
            assert float((wave.float() - fp32).abs().max()) < 0.05 * float(fp32.abs().max()) + 1e-3


def test_hifigan_trunk_is_the_forward_pass_cut_after_k_stages():
    """trunk(mel, k): the input conv and k upsampling stages, channels-last; all of them then the
    output conv is the forward pass; bench vocoder --stages times these cuts."""
    import torch.nn.functional as F

    from soundvcm.bench.vocoder_cold import stage_table, stage_times
    from soundvcm.encoders.hifigan import conv_nwc

    torch.manual_seed(0)
    net = HiFiGAN(channels=32, resblock_kernels=(3,), resblock_dilations=((1, 3, 5),)).eval()
    mel = torch.randn(2, 80, 6) - 5
    with torch.inference_mode():
        for k, length in enumerate((6, 48, 384, 768, 1536)):
            x = net.trunk(mel, k)
            assert x.shape == (2, 32 // 2**k, 1, length) and x.is_contiguous(memory_format=torch.channels_last)
        whole = torch.tanh(conv_nwc(net.conv_post, F.leaky_relu(net.trunk(mel, 4))))[:, 0, 0]
        assert torch.equal(whole, net(mel))
    times = stage_times(frames=4, repeats=1)
    assert len(times) == 5 and all(t > 0 for t in times)
    assert stage_table({"fp32": times}).splitlines()[2].startswith("| fp32 | ")


def test_hifigan_resynthesises_a_harmonic_tone(lite):
    """Real weights turn a mel back into sound with that mel; a random generator does not."""
    sr = 22_050
    t = torch.arange(sr) / sr
    noise = 0.01 * torch.randn(sr, generator=torch.Generator().manual_seed(0))  # a floor, like real recordings
    wave = sum(0.2 / k * torch.sin(2 * math.pi * 220 * k * t) for k in range(1, 6)) + noise
    mel = mel_spectrogram(wave[None], MEL_HIFIGAN)
    with torch.inference_mode():
        real = lite.vocoder(mel)
        random = HiFiGAN()(mel)
    err_real = (mel_spectrogram(real, MEL_HIFIGAN) - mel).abs().mean()
    err_random = (mel_spectrogram(random, MEL_HIFIGAN) - mel).abs().mean()
    assert err_real < 0.5 and 3 * err_real < err_random  # measured: 0.32 vs 1.62


def test_strict_loading_names_the_problem():
    model = EfficientNetLite0()
    state = model.state_dict()
    state.pop("_fc.bias")
    from soundvcm.weights import load_strict

    with pytest.raises(WeightsError, match="missing 1.*_fc.bias"):
        load_strict(model, state, "EfficientNet-Lite0")
    state = model.state_dict()
    state["_conv_head.weight"] = torch.zeros(10, 320, 1, 1)
    with pytest.raises(WeightsError, match="shape mismatch.*_conv_head.weight"):
        load_strict(model, state, "EfficientNet-Lite0")


def test_random_init_minilm_tokenises_without_files():
    model = MiniLMText(layers=1)
    ids, mask = model.tokenize(["hi"])
    assert ids.shape == (1, 77) and mask.sum() == 4  # [CLS] h i [SEP]


# ----- motion sync -------------------------------------------------------------------------
def test_motion_sync_layout_for_8_seconds():
    sync = MotionSync()
    frames = torch.zeros(1, 200, 1, 64, 64, dtype=torch.uint8)
    assert sync(frames).shape == (1, 192, 128)  # 24 segments x 8 tokens, Synchformer's layout


def test_motion_sync_locates_motion_in_time_and_space():
    sync = MotionSync()
    frames = torch.zeros(1, 48, 1, 64, 64, dtype=torch.uint8)
    frames[0, 21:, 0, 40:48, 8:16] = 255  # a square appears at frame 21 in cell (row 5, col 1)
    tokens = sync(frames)  # segments start at frames 0, 8, 16, 24, 32: 5 x 8 tokens
    assert tokens.shape == (1, 40, 128)
    energy = tokens[0].view(5, 8, 2, 64)  # (segment, token, frame in token, cell)
    hot = (energy > 0).nonzero().tolist()
    # frame 21 = segment 1 token 6 frame 1 (8 + 13), segment 2 token 2 frame 1 (16 + 5)
    assert sorted({(s, tk, f) for s, tk, f, _ in hot}) == [(1, 6, 1), (2, 2, 1)]
    assert {c for *_, c in hot} == {5 * 8 + 1}
    assert sync(torch.full((1, 16, 1, 64, 64), 77, dtype=torch.uint8)).abs().max() == 0  # still picture


def test_motion_sync_needs_one_segment():
    with pytest.raises(ValueError, match="at least 16 frames"):
        MotionSync()(torch.zeros(1, 10, 1, 64, 64, dtype=torch.uint8))


# ----- mel latent --------------------------------------------------------------------------
def test_mel_latent_is_an_exact_reshape(lite):
    mel = torch.randn(2, 80, 12)
    latent = mel_to_latent(mel)
    assert latent.shape == (2, 6, 160)
    assert torch.equal(latent[0, 1, :80], mel[0, :, 2]) and torch.equal(latent[0, 1, 80:], mel[0, :, 3])
    assert torch.equal(latent_to_mel(latent), mel)
    wave = torch.randn(1, 8 * 512) * 0.1
    mean, std = lite.encode_audio(wave)
    assert mean.shape == (1, 8, 160) and std.abs().max() == 0
    assert lite.decode_audio(mean).shape == (1, 8 * 512)


def test_lite_spec_matches_lite_network_and_8s_lengths():
    spec = encoder_spec("lite")
    config, name = preset_for_encoders("lite")
    assert name == "lite"
    spec.check_network(config)
    seq = config.sequence
    assert (seq.latent_seq_len, seq.clip_seq_len, seq.sync_seq_len) == (345, 64, 192)
    n = sum(p.numel() for p in MMDiT(config).parameters())
    assert 10e6 <= n <= 30e6  # trainable on CPU cores (issue 4)


def test_spec_mismatch_is_named():
    config, _ = preset_for_encoders("debug")
    with pytest.raises(ValueError, match="clip_dim 32 \\(encoders: 1280\\)"):
        ENCODER_SPECS["lite"].check_network(config)


def test_paper_encoder_set_names_missing_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("SOUNDVCM_WEIGHTS", str(tmp_path))
    with pytest.raises(WeightsError, match="not found.*soundvcm weights download clip_dfn5b clip_bpe synchformer"):
        load_encoder_set("mmaudio_16k")


# ----- weight registry ---------------------------------------------------------------------
def test_registry_records_official_md5s():
    assert registry.REGISTRY["mmaudio_small_16k"].md5 == "af93cde404179f58e3919ac085b8033b"
    assert registry.REGISTRY["synchformer"].url.endswith("/synchformer_state_dict.pth")
    assert all(w.url.startswith("https://") for w in registry.REGISTRY.values())


def test_missing_and_corrupt_weights_name_the_fix(tmp_path):
    with pytest.raises(WeightsError, match="v1-16.pth not found.*soundvcm weights download vae_16k"):
        registry.resolve("vae_16k", tmp_path)
    (tmp_path / "v1-16.pth").write_bytes(b"partial download")
    with pytest.raises(WeightsError, match="md5 .* does not match"):
        registry.resolve("vae_16k", tmp_path)
    with pytest.raises(WeightsError, match="unknown weights"):
        registry.resolve("nope", tmp_path)


def test_download_checks_md5_before_renaming(tmp_path, monkeypatch):
    source = tmp_path / "remote.bin"
    source.write_bytes(b"weights" * 1000)
    good = hashlib.md5(source.read_bytes()).hexdigest()
    store = tmp_path / "store"
    for md5, ok in [("0" * 32, False), (good, True)]:
        entry = registry.WeightFile("test", "test.bin", source.as_uri(), md5, "test file")
        monkeypatch.setitem(registry.REGISTRY, "test", entry)
        if ok:
            path = registry.download("test", store)
            assert path.read_bytes() == source.read_bytes()
        else:
            with pytest.raises(WeightsError, match="md5"):
                registry.download("test", store)
            assert not store.exists() or list(store.iterdir()) == []  # nothing half-written


def test_registry_expected_keys_check_files():
    """A registered file must hold exactly the keys our module loads (weight norm in either form)."""
    from soundvcm.encoders.bigvgan import BIGVGAN_CONFIGS, BigVGAN
    from soundvcm.encoders.mel_vae import MelVAE

    assert len(registry.expected_keys("clip_dfn5b")) == 686 and registry.expected_keys("empty_string") is None
    state = MelVAE.from_config("16k").state_dict()
    registry.check_keys("vae_16k", state)
    state.pop("encoder.conv_in.weight")
    with pytest.raises(WeightsError, match="1 missing \\['encoder.conv_in.weight'\\]"):
        registry.check_keys("vae_16k", state)
    with torch.device("meta"):
        voc = BigVGAN(BIGVGAN_CONFIGS["16k"]).state_dict()
    normed = {}
    for k, v in voc.items():  # the official files store weight-normalised convolutions
        if k.endswith(".weight") and v.dim() == 3:
            normed[k[:-7] + ".weight_g"] = torch.empty(v.shape[0], 1, 1, device="meta")
            normed[k[:-7] + ".weight_v"] = v
        else:
            normed[k] = v
    registry.check_keys("bigvgan_16k", {"generator": normed})
    with pytest.raises(WeightsError, match="unexpected"):
        registry.check_keys("bigvgan_16k", {**normed, "extra.weight": torch.zeros(1)})


def test_a_new_encoder_set_is_a_spec_and_its_module(tmp_path, monkeypatch):
    """Issue 36: adding an encoder set touches its own module, its definition and its tests: here a
    test-only set (the paper set's structure at a tiny size) registered by one entry, then a model
    made for it, loaded and run end to end through the pipeline with no other code knowing its name."""
    from dataclasses import replace

    from media_factory import make_video
    from soundvcm import encoders
    from soundvcm.encoders.mmaudio_set import tiny_mmaudio_set
    from soundvcm.network.checkpoint import save_network
    from soundvcm.network.mmdit import MMDiT
    from soundvcm.pipeline import Pipeline
    from soundvcm.spec import preset_for_encoders

    base = tiny_mmaudio_set("16k").spec
    spec = replace(base, name="toy_set", build=lambda device, pretrained=True, vocoder="auto": tiny_mmaudio_set("16k"))
    monkeypatch.setitem(encoders.ENCODER_SPECS, "toy_set", spec)
    config, name = preset_for_encoders("debug", "toy_set")
    assert (config.clip_dim, config.sync_dim, config.latent_dim) == (spec.clip_dim, spec.sync_dim, spec.latent_dim)
    save_network(tmp_path / "m", MMDiT(config), preset="debug", encoder_set=name, objective="vcm")
    pipe = Pipeline.load(tmp_path / "m", device="cpu", precision="fp32")
    video = make_video(tmp_path / "clip.mp4", duration=1.0)
    result = pipe.generate(video=video, prompt="a knock", duration=1.0)
    assert pipe.encoder_set == "toy_set" and result.sample_rate == spec.sequence.sample_rate
    assert result.wave.numel() == spec.sequence.sample_rate and torch.isfinite(result.wave).all()


def test_presets_and_encoder_sets_read_one_definition_of_the_sizes():
    """Issue 36: an encoder set's widths and timeline are defined once (soundvcm.features); every
    network preset is a size on top of them and fits its set; the auto vocoder is the set's choice."""
    from soundvcm import features
    from soundvcm.encoders import ENCODER_SPECS
    from soundvcm.encoders.hifigan import FAST_VOCODER
    from soundvcm.encoders.lite import load_vocoder
    from soundvcm.network.config import PRESETS, NetworkSize, network_config

    for name, preset in PRESETS.items():
        if preset.encoder_set in ENCODER_SPECS:
            spec = ENCODER_SPECS[preset.encoder_set]
            assert spec.features == preset.features, name
            spec.check_network(preset.config)  # raises naming any disagreement
    # a new size on a set: every width comes from the set, the size only from the size
    config = network_config(NetworkSize(num_heads=3, depth=2, fused_depth=1, duration=2.0), features.LITE3)
    ENCODER_SPECS["lite3"].check_network(config)
    assert (config.hidden_dim, config.sequence.duration, config.latent_dim) == (192, 2.0, 20)
    # lite keeps HiFi-GAN; lite2 prefers the distilled vocoder only where one ships
    assert load_vocoder("auto", "lite", pretrained=False)[1] == "hifigan"
    ships = FAST_VOCODER.with_suffix(".safetensors").is_file()
    assert ENCODER_SPECS["lite2"].vocoders[0] == "fast"
    if not ships:
        assert load_vocoder("auto", "lite2", pretrained=False)[1] == "hifigan"
    # --vocoder: a set refuses what it cannot decode with, before any weights are read
    ENCODER_SPECS["lite2"].check_vocoder("hifigan")
    ENCODER_SPECS["lite2"].check_vocoder("runs/vocoder/export/s1")  # a distilled HiFi-GAN
    with pytest.raises(ValueError, match="'lite2' encoder set decodes with auto, fast, hifigan"):
        ENCODER_SPECS["lite2"].check_vocoder("bigvgan")


def test_a_registered_mmaudio_model_refuses_a_vocoder_it_cannot_use():
    """Issue 36: --vocoder was silently ignored for MMAudio's networks; now one line, before any weight file."""
    from soundvcm.pipeline import Pipeline

    with pytest.raises(ValueError, match="'mmaudio_16k' encoder set decodes with auto, bigvgan$"):
        Pipeline.load("mmaudio_small_16k", vocoder="fast")


def test_the_spec_records_the_vocoder_a_model_was_measured_with():
    from soundvcm.spec import ModelSpec, read_spec

    spec = ModelSpec.create("lite2_small", "lite2", "vcm")
    assert spec.vocoder is None  # its set's auto choice
    pinned = ModelSpec.from_dict({**spec.to_dict(), "vocoder": "hifigan"})
    assert pinned.vocoder == "hifigan" and read_spec({"spec": pinned.to_dict()}) == pinned
    old = spec.to_dict()
    del old["vocoder"]  # a spec saved before the field: the set's choice
    assert ModelSpec.from_dict(old) == spec


def test_bf16_vocoding_runs_in_windows_only_on_amx(monkeypatch):
    """Issue 35: oneDNN's AMX kernels pay a cold start per input length, so vocode windows a bf16 mel
    there; without AMX (Zen 4), in fp32 and for a batch, one pass."""
    from soundvcm.encoders import lite

    class Recorder(torch.nn.Module):
        bf16_window = 128
        calls: list[int] = []

        def forward(self, mel):
            self.calls.append(mel.shape[-1])
            return torch.zeros(mel.shape[0], mel.shape[-1] * 256)

    encoders = lite.LiteEncoderSet(pretrained=False, name="lite2", vocoder="hifigan")
    encoders.vocoder = Recorder()
    mel = torch.zeros(1, 80, 600)
    for amx, dtype, batch, expected in [
        (True, torch.bfloat16, 1, [160] * 5),  # 600 frames in windows of 128 + 2 x 16
        (False, torch.bfloat16, 1, [600]),
        (True, None, 1, [600]),
        (True, torch.bfloat16, 2, [600]),
    ]:
        monkeypatch.setattr(lite, "amx_cpu", lambda amx=amx: amx)
        encoders.vocoder_dtype = dtype
        Recorder.calls = []
        wave = encoders.vocode(mel.expand(batch, -1, -1))
        assert Recorder.calls == expected and wave.shape == (batch, 600 * 256)


def test_amx_is_read_from_the_flags_and_the_isa_cap(monkeypatch):
    from soundvcm import precision

    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512_bf16", "amx_bf16"}))
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert precision.amx_cpu()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")  # Zen 4's path on an AMX machine
    assert not precision.amx_cpu()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert precision.amx_cpu()
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    assert not precision.amx_cpu()
