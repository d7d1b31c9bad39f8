"""The paper's embedders (random init, recorded key lists) against av-benchmark's own modules' outputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from media_factory import clicks
from soundvcm.media.audio import write_audio


# ----- the paper's embedders (random init, recorded key lists, av-benchmark's own modules) ----
def _rule(key: str, shape, seed: int) -> torch.Tensor:
    import zlib

    g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(key.encode()))
    x = torch.randn(tuple(shape), generator=g)
    if key.endswith("running_var"):
        return x.abs() * 0.1 + 0.5
    if "bn" in key and key.endswith("weight"):
        return 1 + 0.1 * x
    return x * 0.05


def _avb_signal() -> torch.Tensor:
    sr = 16_000
    t = np.arange(int(sr * 2.0)) / sr
    return torch.from_numpy(
        (0.3 * np.sin(2 * math.pi * 330 * t) + 0.2 * np.sin(2 * math.pi * 2500 * t) * (t > 1.0)).astype(np.float32)
    )


def _avb_reference():
    from safetensors import safe_open

    path = Path(__file__).resolve().parents[1] / "fixtures" / "panns_vggish_reference.safetensors"
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    return load_file(path), json.loads(meta["panns_keys"]), json.loads(meta["vggish_keys"])


@pytest.mark.slow
def test_panns_cnn14_matches_av_benchmark():
    from soundvcm.evaluation.panns import Cnn14
    from soundvcm.weights import load_strict

    ref, keys, _ = _avb_reference()
    net = Cnn14().eval()
    assert {k: list(v.shape) for k, v in net.state_dict().items()} == keys  # the official file's layout
    assert torch.allclose(net.logmel_extractor.melW, ref["panns.melW"], atol=1e-6)  # our Slaney filterbank
    frozen = ("spectrogram_extractor.", "logmel_extractor.", "num_batches_tracked")
    state = {
        k: (v if k.startswith(frozen) or k.endswith(frozen[2]) else _rule(k, v.shape, 11))
        for k, v in net.state_dict().items()
    }
    load_strict(net, state, "Cnn14")
    with torch.no_grad():
        emb, logits = net(_avb_signal()[None])
    assert (emb - ref["panns.embedding"]).abs().max() < 1e-3 * ref["panns.embedding"].abs().max()
    assert (logits - ref["panns.logits"]).abs().max() < 1e-3 * ref["panns.logits"].abs().max()


def test_vggish_matches_av_benchmark():
    from soundvcm.evaluation.vggish import VGGish, examples
    from soundvcm.weights import load_strict

    ref, _, keys = _avb_reference()
    ex = examples(_avb_signal())
    assert ex.shape == (2, 96, 64) and (ex[0] - ref["vggish.examples_first"]).abs().max() < 1e-4
    net = VGGish().eval()
    assert {k: list(v.shape) for k, v in net.state_dict().items()} == keys
    load_strict(net, {k: _rule(k, s, 12) for k, s in keys.items()}, "VGGish")
    with torch.no_grad():
        emb = net.embed(_avb_signal())
    assert (emb - ref["vggish.embeddings"][0]).abs().max() < 1e-4 * max(1.0, ref["vggish.embeddings"].abs().max())


@pytest.mark.slow
def test_evaluate_adds_paper_metrics_when_weights_are_present(tmp_path, monkeypatch):
    """With (here: random-initialised) PANNs and VGGish files in the weights folder, their keys appear."""
    from dataclasses import replace

    from soundvcm import registry
    from soundvcm.evaluation.evaluate import evaluate
    from soundvcm.evaluation.panns import Cnn14
    from soundvcm.evaluation.vggish import VGGish

    store = tmp_path / "weights"
    store.mkdir()
    torch.save({"model": Cnn14().state_dict()}, store / registry.REGISTRY["panns_cnn14_16k"].filename)
    torch.save(VGGish().state_dict(), store / registry.REGISTRY["vggish"].filename)
    monkeypatch.setenv("SOUNDVCM_WEIGHTS", str(store))
    from soundvcm.evaluation import vggish

    monkeypatch.setattr(vggish, "VGGISH_WEIGHTS", replace(vggish.VGGISH_WEIGHTS, sha256_prefix=None))
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for i in range(3):
        write_audio(gt / f"c{i}.wav", clicks(16_000, 2.0, freq=500 + 150 * i), 16_000)
        write_audio(pred / f"c{i}.wav", clicks(16_000, 2.0, 20.0, freq=500 + 150 * i), 16_000)
    result = evaluate(pred, gt, audio_length=2.0, progress=False)
    assert {"KL-PANNS-softmax", "ISC-PANNS-mean", "ISC-PANNS-std"} <= set(result)
    assert "FD-VGG" in result or "not computed" in result["report"]["FD-VGG"]
    assert "FD-PANN" in result or "not computed" in result["report"]["FD-PANN"]
    assert set(result["report"]["not_computed"]) == {
        "FD-PASST",
        "KL-PASST-softmax",
        "ISC-PASST-mean",
        "IB-Score",
        "DeSync",
    }


def _sync_reference():
    from safetensors import safe_open

    path = Path(__file__).resolve().parents[1] / "fixtures" / "synchformer_reference.safetensors"
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    return load_file(path), json.loads(meta["keys"])


def _sync_rule(key: str, shape, seed: int = 13) -> torch.Tensor:
    import zlib

    g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(key.encode()))
    x = torch.randn(tuple(shape), generator=g)
    if ("norm" in key or "lnorm" in key or key.split(".")[-2].startswith("ln")) and key.endswith("weight"):
        return 1 + 0.1 * x
    return x * 0.05


def test_synchformer_full_keys_match_av_benchmark():
    from soundvcm.evaluation.synchformer import Synchformer

    _, keys = _sync_reference()
    with torch.device("meta"):
        ours = {k: list(v.shape) for k, v in Synchformer().state_dict().items()}
    assert ours == keys  # 513 entries, 237.5M values: the layout of synchformer_state_dict.pth


@pytest.mark.slow
def test_synchformer_audio_branch_and_fusion_match_av_benchmark():
    from soundvcm.evaluation.synchformer import Synchformer
    from soundvcm.weights import load_strict

    ref, keys = _sync_reference()
    net = Synchformer().eval()
    load_strict(net, {k: _sync_rule(k, s) for k, s in keys.items()}, "Synchformer")
    g = torch.Generator().manual_seed(21)
    spec = torch.randn(1, 2, 1, 128, 66, generator=g)
    vis = torch.randn(1, 14, 8, 768, generator=g)
    aud = torch.randn(1, 14, 6, 768, generator=g)
    with torch.no_grad():
        afeats = net.afeat_extractor(spec[0, :, 0].transpose(1, 2))  # (S, 66 frames, 128 mels)
        logits = net.compare_v_a(vis, aud)
    assert (afeats - ref["afeats"][0]).abs().max() < 1e-4
    assert (logits - ref["logits"]).abs().max() < 1e-4


def test_sync_audio_front_end():
    from soundvcm.evaluation.synchformer import audio_segments

    wave = torch.randn(1, 16_000 * 4) * 0.1
    segs = audio_segments(wave)
    assert segs.shape == (1, 11, 66, 128)  # (64000 - 10240) // 5120 + 1 segments, 66 frames, 128 mels
    assert torch.all(segs[0, :, -1] == (0 - -4.2677393) / (2 * 4.5689974))  # the padded 66th frame


@pytest.mark.slow
def test_desync_through_evaluate_with_a_synchformer_file(tmp_path, monkeypatch):
    """DeSync with (here: random-initialised) Synchformer weights: one score per clip on the offset grid."""
    from media_factory import clicks, make_video
    from soundvcm import registry
    from soundvcm.evaluation.evaluate import evaluate
    from soundvcm.evaluation.synchformer import GRID, Synchformer

    store = tmp_path / "weights"
    store.mkdir()
    torch.manual_seed(0)
    torch.save(Synchformer().state_dict(), store / registry.REGISTRY["synchformer"].filename)
    monkeypatch.setenv("SOUNDVCM_WEIGHTS", str(store))
    from dataclasses import replace

    from soundvcm.evaluation import synchformer

    monkeypatch.setattr(synchformer, "SYNCHFORMER_WEIGHTS", replace(synchformer.SYNCHFORMER_WEIGHTS, md5=None))
    gt, pred, videos = tmp_path / "gt", tmp_path / "pred", tmp_path / "videos"
    write_audio(gt / "c0.wav", clicks(16_000, 5.0), 16_000)
    write_audio(pred / "c0.wav", clicks(16_000, 5.0, 100.0), 16_000)
    make_video(videos / "c0.mp4", duration=5.0, size=(64, 48), audio_rate=None)
    result = evaluate(pred, gt, audio_length=5.0, video_dir=videos, progress=False)
    assert "DeSync" in result and any(
        abs(result["DeSync"] - abs(v)) < 1e-6 for v in (GRID[:, None] + GRID[None]).flatten() / 2
    )
    assert "DeSync" not in result["report"]["not_computed"]


def _passt_rule(key: str, shape, seed: int = 17) -> torch.Tensor:
    import zlib

    g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(key.encode()))
    x = torch.randn(tuple(shape), generator=g)
    return 1 + 0.1 * x if ("norm" in key or key.startswith("head.0")) and key.endswith("weight") else x * 0.05


@pytest.mark.slow
def test_passt_matches_hear21passt():
    from safetensors import safe_open

    from soundvcm.evaluation.passt import PaSST
    from soundvcm.weights import load_strict

    path = Path(__file__).resolve().parents[1] / "fixtures" / "passt_reference.safetensors"
    with safe_open(path, "pt") as f:
        keys = json.loads(f.metadata()["keys"])
    ref = load_file(path)
    net = PaSST().eval()
    assert {k: list(v.shape) for k, v in net.state_dict().items()} == keys  # 159 entries, 86.2M values
    load_strict(net, {k: _passt_rule(k, s) for k, s in keys.items()}, "PaSST")
    spec = torch.randn(1, 1, 128, 1001, generator=torch.Generator().manual_seed(23))
    with torch.no_grad():
        logits, features = net(spec)
    assert (features - ref["features"]).abs().max() < 1e-4 and (logits - ref["logits"]).abs().max() < 1e-4


def test_passt_front_end():
    from soundvcm.evaluation.passt import log_mel
    from soundvcm.media.mel import kaldi_mel_banks

    banks = kaldi_mel_banks()
    assert banks.shape == (128, 513) and banks[:, -1].abs().max() == 0  # zero Nyquist column
    assert banks.max() <= 1.0 and (banks.argmax(1).diff() >= 0).all()  # triangles, ascending centres
    top = 15_000 * 1024 / 32_000  # no filter reaches above fmax (bin 480)
    assert banks[:, int(top) + 1 :].abs().max() == 0
    assert log_mel(torch.zeros(1, 320_000)).shape == (1, 128, 1000)  # pre-emphasis drops a sample; 99 time patches


def _ib_reference():
    from safetensors import safe_open

    path = Path(__file__).resolve().parents[1] / "fixtures" / "imagebind_reference.safetensors"
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    return load_file(path), json.loads(meta["full_keys"]), json.loads(meta["tiny_keys"])


def test_imagebind_full_keys_cover_vision_and_audio():
    from soundvcm.evaluation.imagebind import OTHER_MODALITIES, ImageBind

    _, full, _ = _ib_reference()
    with torch.device("meta"):
        ours = {k: list(v.shape) for k, v in ImageBind().state_dict().items()}
    assert all(full[k] == s for k, s in ours.items())  # every vision/audio entry, same shape
    rest = set(full) - set(ours)
    assert rest and all(k.split(".")[1] in OTHER_MODALITIES for k in rest)  # the rest: other modalities


def test_imagebind_matches_the_original():
    from soundvcm.evaluation.imagebind import ImageBind, ImageBindConfig
    from soundvcm.weights import load_strict

    ref, _, tiny_keys = _ib_reference()

    def rule(key, shape):
        import zlib

        g = torch.Generator().manual_seed(19 * 1_000_003 + zlib.crc32(key.encode()))
        x = torch.randn(tuple(shape), generator=g)
        is_norm = "norm" in key or (".0.weight" in key and "heads" in key) or "pre_transformer_layer" in key
        return 1 + 0.1 * x if is_norm and key.endswith("weight") and len(shape) == 1 else x * 0.05

    net = ImageBind(ImageBindConfig(64, 2, 4, 48, 2, 4, 32)).eval()
    state = {k: (v if "log_logit_scale" in k else rule(k, tiny_keys[k])) for k, v in net.state_dict().items()}
    load_strict(net, state, "tiny ImageBind")
    g = torch.Generator().manual_seed(29)
    video = torch.randn(1, 2, 3, 2, 224, 224, generator=g)
    audio = torch.randn(1, 3, 1, 128, 204, generator=g)
    with torch.no_grad():
        v = net.encode_vision(video[0]).mean(0)
        a = (20.0 * net.encode_audio(audio[0])).mean(0)  # the audio post-processor scales by 20
    assert (v - ref["vision"][0]).abs().max() < 1e-5 and (a - ref["audio"][0]).abs().max() < 1e-4


def test_imagebind_input_pipelines():
    from soundvcm.evaluation.imagebind import audio_clips, video_clips
    from soundvcm.media.mel import kaldi_fbank

    tone = torch.sin(2 * math.pi * 1000 * torch.arange(16_000) / 16_000)
    fb = kaldi_fbank(tone)
    assert fb.shape == (98, 128)  # snip edges: 1 + (16000 - 400) // 160 frames
    peak_bin = fb.mean(0).argmax().item()
    mel = 1127 * math.log(1 + 1000 / 700)
    lo, hi = 1127 * math.log(1 + 20 / 700), 1127 * math.log(1 + 8000 / 700)
    assert abs(peak_bin - ((mel - lo) / ((hi - lo) / 129) - 1)) <= 1.5  # the 1 kHz band
    assert audio_clips(torch.zeros(16_000 * 5)).shape == (3, 1, 128, 204)
    frames = torch.randint(0, 255, (4, 3, 224, 300), dtype=torch.uint8)  # 8 s at 0.5 fps
    clips = video_clips(frames)
    assert clips.shape == (9, 3, 2, 224, 224)  # 3 consecutive pairs x 3 crops
    assert torch.equal(clips[2, :, 1], clips[5, :, 0])  # pair 0's second frame starts pair 1 (right crop)


def test_ib_score_through_evaluate(tmp_path, monkeypatch):
    """IB-Score plumbing with a tiny ImageBind standing in for the 1.2B-parameter file."""
    import soundvcm.evaluation.imagebind as ib
    from media_factory import clicks, make_video
    from soundvcm import registry
    from soundvcm.evaluation.evaluate import evaluate

    store = tmp_path / "weights"
    store.mkdir()
    (store / registry.REGISTRY["imagebind_huge"].filename).write_bytes(b"stand-in")
    monkeypatch.setenv("SOUNDVCM_WEIGHTS", str(store))
    torch.manual_seed(0)
    tiny = ib.ImageBind(ib.ImageBindConfig(64, 1, 4, 48, 1, 4, 32)).eval()
    monkeypatch.setattr(ib, "load_imagebind", lambda path: tiny)
    gt, pred, videos = tmp_path / "gt", tmp_path / "pred", tmp_path / "videos"
    for i in range(2):
        write_audio(gt / f"c{i}.wav", clicks(16_000, 4.0, freq=500 + 300 * i), 16_000)
        write_audio(pred / f"c{i}.wav", clicks(16_000, 4.0, freq=500 + 300 * i), 16_000)
        make_video(videos / f"c{i}.mp4", duration=4.0, size=(320, 240), audio_rate=None)
    result = evaluate(pred, gt, audio_length=4.0, video_dir=videos, progress=False)
    assert "IB-Score" not in result["report"]["not_computed"]
    # the same score computed by hand: each prediction against its own video's frames, x 100
    from soundvcm.media.audio import load_audio
    from soundvcm.media.video import FrameSpec, load_video

    cosines = []
    with torch.inference_mode():
        for i in range(2):
            frames = load_video(videos / f"c{i}.mp4", {"ib": FrameSpec(ib.VIDEO_FPS, 224, 224, fit="short")}, 4.0)
            v = tiny.encode_vision(ib.video_clips(frames.frames["ib"])).mean(0)
            wave, _ = load_audio(pred / f"c{i}.wav", 16_000, duration=4.0)
            a = tiny.encode_audio(ib.audio_clips(wave)).mean(0)
            cosines.append(torch.nn.functional.cosine_similarity(v.double(), a.double(), dim=0))
    assert result["IB-Score"] == pytest.approx(float(torch.stack(cosines).mean() * 100), abs=1e-3)
    assert "DeSync" in result["report"]["not_computed"]  # no Synchformer file in this store


def test_front_ends_match_torchaudio():
    """The Synchformer, PaSST and ImageBind audio front ends against torchaudio's own (fixture)."""
    from soundvcm.evaluation.passt import log_mel
    from soundvcm.evaluation.synchformer import audio_segments
    from soundvcm.media.mel import kaldi_fbank

    ref = load_file(Path(__file__).resolve().parents[1] / "fixtures" / "torchaudio_frontends_reference.safetensors")

    def signal(sr, seconds):
        t = torch.arange(int(sr * seconds), dtype=torch.float64) / sr
        wave = 0.3 * torch.sin(2 * math.pi * 440 * t) + 0.2 * torch.sin(2 * math.pi * 3100 * t) * (t > seconds / 2)
        return (wave + 0.1 * torch.sin(2 * math.pi * 97 * t)).float()

    sync = audio_segments(signal(16_000, 10_240 / 16_000)[None])[0, 0].T
    assert (sync - ref["sync_mel"]).abs().max() < 1e-4
    assert (log_mel(signal(32_000, 1.0)[None])[0] - ref["passt_mel"]).abs().max() < 1e-4
    wave = signal(16_000, 1.0)
    fbank, expected = kaldi_fbank(wave - wave.mean()), ref["imagebind_fbank"]
    audible = expected > -10  # below that, torchaudio's float32 round-off dominates the log
    assert (fbank - expected)[audible].abs().max() < 1e-3 and (fbank - expected).abs().median() < 1e-5


def test_pairing_follows_av_benchmark_names():
    from soundvcm.evaluation.evaluate import pair

    gt = {"zxpo56cpUBU_000007", "abc", "x-1"}
    pred = {
        "zxpo56cpUBU_000007-0": None,
        "000000014_zxpo56cpUBU_000007-1": None,
        "abc": None,
        "x-1": None,
        "zz-3": None,
    }
    pairs, unpaired, missing = pair(pred, gt)
    assert sorted(pairs) == [
        ("000000014_zxpo56cpUBU_000007-1", "zxpo56cpUBU_000007"), ("abc", "abc"), ("x-1", "x-1"),
        ("zxpo56cpUBU_000007-0", "zxpo56cpUBU_000007"),
    ]  # fmt: skip
    assert unpaired == ["zz-3"] and missing == []
