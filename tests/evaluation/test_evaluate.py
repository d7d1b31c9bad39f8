"""Evaluation: the aisfx embedder against the package's own pipeline (real offline weights), and
`soundvcm evaluate` on audio the tests make (pairing, reports, caching, known onset lags)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from media_factory import clicks
from soundvcm.cli import main
from soundvcm.evaluation import aisfx
from soundvcm.media.audio import write_audio

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "aisfx_reference.safetensors"


def _reference_signal() -> torch.Tensor:
    """The signal of tests/fixtures/make_aisfx_fixture.py.txt."""
    sr = 44100
    t = np.arange(int(sr * 3.0)) / sr
    y = (
        0.3 * np.sin(2 * math.pi * 440 * t) * (t < 1.5)
        + 0.2 * np.sign(np.sin(2 * math.pi * 3 * t)) * (t >= 1.5)
        + 0.05 * np.random.default_rng(0).standard_normal(t.size)
    ).astype(np.float32)
    return torch.from_numpy(y)


@pytest.fixture(scope="module")
def net():
    return aisfx.load_aisfx()


def test_aisfx_matches_the_package(net):
    ref = load_file(FIXTURE)
    spec = aisfx.log_mel(_reference_signal())
    assert (spec[:20] - ref["spec_first20"]).abs().max() < 1e-5
    emb, logits = aisfx.embed_clip(net, _reference_signal())
    assert emb.shape == (1, 512)
    assert (emb - ref["embeddings"]).abs().max() < 1e-4
    assert (logits - ref["logits_soundstorm"][0]).abs().max() < 1e-4
    assert net.heads["soundstormBalanced"] == 3 and net.fc[3][-1].out_features == 81


def test_aisfx_blocks():
    assert aisfx.blocks(torch.zeros(344, 96)).shape == (5, 100, 96)  # 8 s: hop 50, partial block dropped
    assert aisfx.blocks(torch.zeros(30, 96)).shape == (1, 100, 96)  # short: one zero-padded block


def test_evaluate_cli_reports_everything(tmp_path, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for i in range(4):
        write_audio(gt / f"clip{i}.wav", clicks(16_000, 3.0, freq=400 + 100 * i), 16_000)
    for i in range(3):  # predictions lag the ground truth by 40 ms; NAME-0 pairs with NAME
        write_audio(pred / f"clip{i}-0.flac", clicks(16_000, 3.0, 40.0, freq=400 + 100 * i), 16_000)
    write_audio(pred / "stray.flac", clicks(16_000, 3.0), 16_000)  # no ground truth
    write_audio(pred / "clip3.flac", clicks(22_050, 1.0, freq=700), 22_050)  # short, other sample rate
    out = tmp_path / "metrics.json"
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--audio-length", "3", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    report = result["report"]
    assert report["pairs"] == 4 and report["unpaired_pred"] == ["stray"] and report["unpaired_gt"] == []
    assert report["short"] == ["pred/clip3"]
    assert report["sample_rate_mismatch"] == ["clip3: pred 22050 Hz vs gt 16000 Hz"]
    assert {"KL-AISFX", "ISC-AISFX", "Onset-Lag-ms"} <= set(result)
    assert "FD-AISFX" in result or "not computed" in report["FD-AISFX"]  # 512-d needs many clips
    assert set(report["not_computed"]) >= {"FD-VGG", "FD-PANN", "DeSync"}
    err = capsys.readouterr().err
    assert "unpaired pred: stray" in err and "short: pred/clip3" in err
    # the ground-truth embeddings were cached and serve as --gt on their own
    cache = gt / ".soundvcm_eval" / "features.safetensors"
    assert cache.is_file()
    assert main(["evaluate", "--pred", str(pred), "--gt", str(cache), "--audio-length", "3", "--out", str(out)]) == 0
    again = json.loads(out.read_text())
    assert again["KL-AISFX"] == pytest.approx(result["KL-AISFX"], rel=1e-5) and "Onset-Lag-ms" not in again


def test_onset_lag_through_evaluate(tmp_path):
    from soundvcm.evaluation.evaluate import evaluate

    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for i in range(2):
        write_audio(gt / f"c{i}.wav", clicks(16_000, 3.0, freq=500 + 200 * i), 16_000)
        write_audio(pred / f"c{i}.wav", clicks(16_000, 3.0, 60.0, freq=500 + 200 * i), 16_000)
    result = evaluate(pred, gt, audio_length=3.0, progress=False)
    assert abs(result["Onset-Lag-ms"] - 60.0) <= 10.0
    same = evaluate(gt, gt, audio_length=3.0, progress=False)
    assert same["Onset-Lag-ms"] <= 5.0 and same["KL-AISFX"] == pytest.approx(0.0, abs=1e-6)
    # files left by another run (a late, unrelated clip) are scored only when asked for
    write_audio(gt / "stale.wav", clicks(16_000, 3.0, freq=900), 16_000)
    write_audio(pred / "stale.wav", clicks(16_000, 3.0, 400.0, freq=900), 16_000)
    assert evaluate(pred, gt, audio_length=3.0, progress=False)["report"]["pairs"] == 3
    only = evaluate(pred, gt, audio_length=3.0, progress=False, only={"c0", "c1"})
    assert only["report"]["pairs"] == 2 and only["Onset-Lag-ms"] == pytest.approx(result["Onset-Lag-ms"])


def test_evaluate_bad_inputs(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", "--pred", str(tmp_path / "empty"), "--gt", str(tmp_path)]) == 2
    assert main(["evaluate", "--pred", str(tmp_path / "nope"), "--gt", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no audio files" in err and "not a folder of audio files" in err
