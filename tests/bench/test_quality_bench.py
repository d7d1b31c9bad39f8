"""``bench quality``'s known answers on a miniature open-data folder, shipped models, ``--plot``."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from soundvcm.bench.quality import QualityConfig, Row, run_quality
from soundvcm.data.foley import FoleyConfig, make_split

DURATION = 3.0


def _mini_open(root: Path) -> Path:
    """foley (3 test, 6 train clips, one object each: sparse events) and sfx (text-audio) splits."""
    world = FoleyConfig(duration=DURATION, max_objects=1)
    make_split(root / "foley", "test", 3, world)
    make_split(root / "foley", "train", 6, world)
    sr = 22_050
    t = np.arange(int(DURATION * sr)) / sr
    for split, n in (("test", 3), ("train", 3)):
        rows = []
        for i in range(n):
            tone = (0.3 * np.sin(2 * np.pi * (300 + 200 * i) * t) * np.exp(-t)).astype(np.float32)
            path = root / "sfx" / split / f"tone_{i}.flac"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, tone, sr)
            rows.append(f"{split}/tone_{i}.flac\ta tone number {i}")
        (root / "sfx" / f"{split}.tsv").write_text("path\tcaption\n" + "\n".join(rows) + "\n")
    return root


def _untrained_student(stem: Path) -> str:
    """A random V2-shaped vocoder in `soundvcm vocoder export`'s format."""
    from soundvcm.atomic import save_tensors
    from soundvcm.training.vocoder import StudentShape

    torch.manual_seed(0)
    shape = StudentShape(channels=16)
    stem.parent.mkdir(parents=True, exist_ok=True)
    save_tensors(stem.with_suffix(".safetensors"), {k: v.half() for k, v in shape.build().state_dict().items()})
    stem.with_suffix(".json").write_text(json.dumps({"shape": asdict(shape)}))
    return str(stem)


def test_ceiling_rows_name_their_latent_and_vocoder():
    from soundvcm.bench.quality import ceiling_parts, reference_rows

    assert ceiling_parts("ceiling") == ("lite", "hifigan")
    assert ceiling_parts("ceiling fast") == ("lite", "fast")
    assert ceiling_parts("ceiling@lite3") == ("lite3", "hifigan")
    assert reference_rows(("fast",), ("lite3",))[-2:] == ("ceiling fast", "ceiling@lite3")


def _clicks(times: list[float], duration: float = 4.0, sr: int = 22_050) -> np.ndarray:
    rng = np.random.default_rng(len(times))
    wave = 1e-3 * rng.standard_normal(int(duration * sr)).astype(np.float32)
    decay = np.exp(-np.arange(2000) / 200.0).astype(np.float32)
    for t in times:
        i = int(t * sr)
        wave[i : i + 2000] += 0.5 * decay * rng.standard_normal(2000).astype(np.float32)
    return wave


def test_onsets_against_the_original_have_a_chance_level(tmp_path):
    """Real footage's measure, on known answers: the original itself scores 1 against its own onsets
    and only chance against the others'; a copy 0.3 s late falls to that chance; silence scores 0."""
    from soundvcm.bench.quality_scores import original_onset_scores
    from soundvcm.bench.quality_sets import Item, TestSet

    times = [[0.3, 1.1, 2.6], [0.7, 1.9, 3.3], [0.5, 1.5, 2.2, 3.6]]
    items = [Item(f"w{i}", tmp_path / "x", media=tmp_path / "x.mp4") for i in range(3)]
    ts = TestSet("bbb", items)
    rows = {"gt": times, "late": [[t + 0.3 for t in ts_] for ts_ in times], "silence": [[], [], []]}
    for row, clip_times in rows.items():
        (tmp_path / row).mkdir()
        for item, ct in zip(items, clip_times):
            wave = _clicks(ct) if ct else np.zeros(4 * 22_050, np.float32)
            sf.write(tmp_path / row / f"{item.name}.flac", wave, 22_050)
    same = original_onset_scores(tmp_path / "gt", tmp_path / "gt", ts)
    assert same["Orig-onset-F1"] == 1.0 and same["Orig-onset-F1-chance"] < 0.3
    assert same["Orig-onset-F1-chance"] <= same["Orig-onset-chance-p95"] < 1.0
    assert same["Orig-onset-margin"] == pytest.approx(1.0 - same["Orig-onset-F1-chance"])
    late = original_onset_scores(tmp_path / "late", tmp_path / "gt", ts)
    assert late["Orig-onset-F1"] < 0.3 and late["Orig-onset-margin"] < 0.2
    assert original_onset_scores(tmp_path / "silence", tmp_path / "gt", ts)["Orig-onset-F1"] == 0.0


def test_an_originals_onsets_are_remembered_until_the_file_changes(tmp_path):
    """Every row is scored against the same originals: their onsets are detected once, and again
    only when the file itself changes (here: clicks, then silence written over them)."""
    from soundvcm.bench.quality_scores import _onsets_of, file_onsets

    path = tmp_path / "w0.flac"
    sf.write(path, _clicks([0.5, 2.0]), 22_050)
    first = file_onsets(path)
    assert len(first) == 2 and abs(first[0] - 0.5) < 0.05
    hits = _onsets_of.cache_info().hits
    assert file_onsets(path) == first and _onsets_of.cache_info().hits == hits + 1
    sf.write(path, np.zeros(4 * 22_050, np.float32), 22_050)
    assert file_onsets(path) == []


def test_spurious_detections_are_sorted_by_kind():
    """Known answers: one true event at 1 s, a silent bounce at 2 s; detections on the event, 80 ms
    after it (echo), 10 ms off the bounce, 0.5 s after the event (neither) and far away (neither)."""
    from soundvcm.bench.quality_scores import _spurious_kinds
    from soundvcm.evaluation.events import onset_f1

    detected = [1.0, 1.08, 2.01, 1.5, 3.2]
    score = onset_f1(detected, [1.0])
    assert _spurious_kinds(detected, score, [2.0]) == (1, 1)
    assert _spurious_kinds(detected, score, []) == (1, 0)  # no silent contacts known: 2.01 is neither
    assert _spurious_kinds([1.0], onset_f1([1.0], [1.0]), [2.0]) == (0, 0)


def test_each_set_is_scored_by_what_is_known_of_it():
    """The Foley world has its events; the film has video but no events (scored against the
    original's onsets); a text-only set has neither."""
    from soundvcm.bench.quality_sets import Item, TestSet

    video = Item("a", Path("a.flac"), media=Path("a.mp4"))
    text = Item("b", Path("b.flac"), caption="a door")
    kinds = {
        name: (TestSet(name, items).events_known, TestSet(name, items).real_footage)
        for name, items in (("foley", [video]), ("bbb", [text, video]), ("sfx", [text]), ("bbb0", []))
    }
    assert kinds == {"foley": (True, False), "bbb": (False, True), "sfx": (False, False), "bbb0": (False, False)}


@pytest.mark.slow
def test_reference_rows_give_the_known_answers(tmp_path):
    data = _mini_open(tmp_path / "open")
    untrained = _untrained_student(tmp_path / "student")
    cfg = QualityConfig(
        data, tmp_path / "q", (), ("foley", "sfx"), DURATION, ceiling_vocoders=("hifigan", untrained),
        ceiling_latents=("lite3",),
    )  # fmt: skip
    doc = run_quality(cfg)
    foley = doc["results"]["foley"]
    # the ceiling through the mel VAE's latent (80 bands -> 20 channels): lossier than the raw mel, far
    # nearer the truth than silence; the events it keeps stay on time (on this modal-synthesis bank it
    # keeps about half; on the recorded one-shots its models reach onset F1 ~0.9, BENCHMARKS.md)
    vae = foley.pop("ceiling@lite3")
    assert foley["ceiling"]["FD-AISFX"] < vae["FD-AISFX"] < foley["silence"]["FD-AISFX"]
    assert vae["Onset-recall"] > 0.3 and vae["Event-abs-error-ms"] < 10
    # the ceiling through another vocoder: the reference itself scores the same, an untrained student worse
    scores = {k: v for k, v in foley["ceiling"].items() if k != "s/clip"}
    assert {k: foley["ceiling hifigan"][k] for k in scores} == scores
    assert foley[f"ceiling {untrained}"]["FD-AISFX"] > 2 * foley["ceiling"]["FD-AISFX"]
    del foley["ceiling hifigan"], foley[f"ceiling {untrained}"]
    ceiling, silence, shifted, rand = (foley[k] for k in ("ceiling", "silence", "gt +100 ms", "random train clip"))
    # every event survives the latent and the vocoder, on time; with this offline modal-synthesis bank
    # the speech-trained HiFi-GAN adds ringing that the detector counts as extra onsets (precision
    # ~0.6 here; the recorded one-shots of `data open` give F1 ~0.96, BENCHMARKS.md)
    assert ceiling["Onset-recall"] >= 0.95 and ceiling["Event-abs-error-ms"] < 5 and ceiling["Onset-F1"] >= 0.6
    assert silence["Onset-F1"] == 0.0
    assert rand["Onset-F1"] < 0.6 * ceiling["Onset-F1"]
    assert shifted["Onset-F1"] < 0.3 and shifted["Onset-Lag-ms"] == pytest.approx(100, abs=15)
    assert shifted["Event-error-ms"] == pytest.approx(100, abs=15) or shifted["Onset-F1"] == 0.0
    assert ceiling["FD-AISFX"] < silence["FD-AISFX"] and ceiling["KID-AISFX"] < silence["KID-AISFX"]
    bed, other = foley["noise bed"], foley["other clip"]  # issue 23's known answers of the fixed detector
    assert bed["Onset-F1"] == 0.0 and bed["Onset-Acc"] == 0.0 and bed["Onset-AP"] == 0.0
    assert other["Onset-Acc"] < ceiling["Onset-Acc"] and other["Onset-AP"] < ceiling["Onset-AP"]
    assert ceiling["Onset-Acc"] >= 0.95 and silence["Onset-AP"] == 0.0
    # a copy shifted by 0.1 s: every unmatched detection follows its own event (an echo, or a silent bounce)
    assert shifted["FP-echo-share"] + shifted["FP-silent-contact-share"] >= 0.9
    assert set(doc["results"]["sfx"]) == {"silence", "noise bed", "random train clip", "other clip", "ceiling",
                                          "gt +100 ms", "ceiling hifigan", f"ceiling {untrained}",
                                          "ceiling@lite3"}  # fmt: skip
    for name in ("foley_spectrograms.png", "sfx_spectrograms.png", "foley_sync.png", "quality.json"):
        assert (tmp_path / "q" / name).stat().st_size > 1000
    assert "| ceiling |" in doc["table"] and "Onset-F1" in doc["table"]
    saved = json.loads((tmp_path / "q" / "quality.json").read_text())
    assert saved["results"]["foley"]["silence"]["Onset-F1"] == 0.0


def test_bench_vocoder_error_has_the_teacher_as_its_zero(tmp_path):
    from soundvcm.bench import vocoder_quality

    data = _mini_open(tmp_path / "open")
    untrained = _untrained_student(tmp_path / "student")
    rows = vocoder_quality.run(data, ("hifigan", untrained), clips=2, duration=DURATION, sets=("foley", "sfx"))
    by = {(r.vocoder, r.test_set): r for r in rows}
    assert len(rows) == 4  # hifigan once, first, though named again
    for name in ("foley", "sfx"):
        teacher, student = by["hifigan", name], by[untrained, name]
        assert teacher.to_teacher == 0.0 and teacher.clips == 2
        assert 0.05 < teacher.to_mel < 1.0  # V1 universal resynthesises its own mel closely, not exactly
        assert student.to_mel > teacher.to_mel + 0.5 and student.to_teacher > 0.5  # an untrained student: far
    text = vocoder_quality.table(rows)
    assert "| hifigan | foley | 2 |" in text and "+0.0000" in text


@pytest.mark.slow
def test_model_rows_share_the_encoding_and_a_rerun_resumes(tmp_path):
    from soundvcm.network.checkpoint import save_network
    from soundvcm.network.mmdit import MMDiT
    from soundvcm.spec import preset_for_encoders

    data = _mini_open(tmp_path / "open")
    config, _ = preset_for_encoders("lite_small")
    torch.manual_seed(0)
    save_network(tmp_path / "m", MMDiT(config), preset="lite_small", encoder_set="lite", objective="vcm")
    rows = (Row.parse(f"a@1={tmp_path / 'm'}:consistency:1"), Row.parse(f"b@2={tmp_path / 'm'}:euler:2:1.0"))
    cfg = QualityConfig(data, tmp_path / "q", rows, ("sfx",), DURATION, limit=2, references=False)
    doc = run_quality(cfg)
    res = doc["results"]["sfx"]
    assert res["a@1"]["NFE"] == 1 and res["b@2"]["NFE"] == 2  # cfg 1.0: one evaluation per step
    flac = tmp_path / "q" / "sfx" / "a@1" / "tone_0.flac"
    stamp = flac.stat().st_mtime_ns
    run_quality(cfg)
    assert flac.stat().st_mtime_ns == stamp  # complete rows are not generated again


def test_row_parsing_errors_name_the_fix():
    assert Row.parse("v=default:consistency:4") == Row("v", "default", "consistency", 4)
    assert Row.parse("f=m.json:euler:25:3.5").cfg == 3.5
    for bad, msg in (("novalue", "NAME=MODEL"), ("x=m:heun", "sampler"), ("x=m:euler:0", ">= 1"),
                     ("x=m:euler:two", "whole number"), ("silence=m", "reference")):  # fmt: skip
        with pytest.raises(ValueError, match=msg):
            Row.parse(bad)


def test_missing_open_data_says_how_to_build_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="soundvcm data open"):
        run_quality(QualityConfig(tmp_path, tmp_path / "q", (), ("foley",)))


# ----- shipped models --------------------------------------------------------------------------------
@pytest.fixture
def shipped_dir(tmp_path, monkeypatch):
    from soundvcm import models

    folder = tmp_path / "shipped"
    folder.mkdir()
    monkeypatch.setattr(models, "SHIPPED_DIR", folder)
    return folder


def _debug_checkpoint(path: Path):
    from soundvcm.network.checkpoint import save_network
    from soundvcm.network.mmdit import MMDiT, network_preset

    torch.manual_seed(0)
    net = MMDiT(network_preset("debug"))
    for p in net.parameters():
        p.data.normal_(0, 0.05)
    save_network(path, net, preset="debug", encoder_set="debug", objective="vcm")
    return net


def test_a_shipped_model_loads_by_name_in_fp16_and_damage_is_named(tmp_path, shipped_dir):
    from safetensors.torch import load_file

    from soundvcm import models
    from soundvcm.network.checkpoint import load_network

    net = _debug_checkpoint(tmp_path / "ckpt")
    models.ship(tmp_path / "ckpt", "tiny", "a test model")
    assert models.shipped_names() == ["tiny"] and models.is_shipped("tiny")
    assert all(
        v.dtype == torch.float16 for v in load_file(shipped_dir / "tiny.safetensors").values() if v.is_floating_point()
    )
    loaded = load_network(models.resolve_shipped("tiny"))
    for (k, a), b in zip(net.state_dict().items(), loaded.state_dict().values()):
        assert b.dtype == a.dtype and torch.allclose(a, b, rtol=1e-3, atol=1e-4), k  # fp16 storage, fp32 network
    blob = bytearray((shipped_dir / "tiny.safetensors").read_bytes())
    blob[-1] ^= 0xFF
    (shipped_dir / "tiny.safetensors").write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="damaged .*git checkout -- src/soundvcm/models"):
        models.resolve_shipped("tiny")
    (shipped_dir / "tiny.json").unlink()
    with pytest.raises(FileNotFoundError, match="missing; restore it"):
        models.resolve_shipped("tiny")


def test_generate_without_a_model_names_the_restore_command_when_none_ships(tmp_path, shipped_dir, capsys):
    from soundvcm.cli import main

    assert main(["generate", "--prompt", "a dog barks", "--out", str(tmp_path / "o")]) == 2
    assert "none ships with this install" in capsys.readouterr().err


def test_generate_plot_writes_frames_over_the_spectrogram(tmp_path):
    from soundvcm.media.figure import soundtrack_figure

    clip = make_split(tmp_path / "w", "test", 1, FoleyConfig(duration=2.0))
    video = clip.parent / "test" / "foley_test_00000.mp4"
    wave, sr = sf.read(video.with_suffix(".flac"), dtype="float32")
    with_video = soundtrack_figure(tmp_path / "v.png", torch.from_numpy(wave), sr, video)
    audio_only = soundtrack_figure(tmp_path / "a.png", torch.from_numpy(wave), sr)
    import matplotlib.image

    tall, short = matplotlib.image.imread(with_video), matplotlib.image.imread(audio_only)
    assert tall.shape[0] > short.shape[0] * 1.3  # the frame strip sits above the spectrogram
    assert not list(tmp_path.glob("*.tmp*"))


@pytest.mark.slow
def test_bench_precision_reports_the_drift_of_each_feature(tmp_path, capsys):
    """Real lite2 encoders on 1 s of one clip (bf16 is emulated, 14-100x slower, on an AVX2 CPU): sync
    and the mel take no autocast (identical in both); the bf16 visual and text features stay close to
    fp32's; the two resyntheses differ by less than the vocoder's own loss."""
    from soundvcm.cli import main

    data = _mini_open(tmp_path / "open")
    out = tmp_path / "drift.json"
    assert main(["bench", "precision", "--data", str(data), "--clips", "1", "--duration", "1", "--json", str(out)]) == 0
    rows = {(r["feature"], r["measure"]): r for r in json.loads(out.read_text())}
    assert rows[("sync", "cosine bf16 vs fp32")]["worst"] == pytest.approx(1.0, abs=1e-9)
    assert 0.95 < rows[("visual", "cosine bf16 vs fp32")]["mean"] <= 1.0
    assert 0.99 < rows[("text", "cosine bf16 vs fp32")]["mean"] <= 1.0
    fp32 = rows[("vocoder", "log-mel L1, fp32 resynthesis vs the mel")]
    between = rows[("vocoder", "log-mel L1 between the two")]
    assert 0 < between["mean"] < fp32["mean"]  # the precisions differ by less than the vocoder's own loss
    assert "| visual | cosine bf16 vs fp32 |" in capsys.readouterr().out
