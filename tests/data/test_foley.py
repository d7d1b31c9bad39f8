"""The synthetic Foley world: reproducible scenes, sounds exactly at the contact times, materials that
sound different, pictures that show the contact, and resumable splits."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from soundvcm.data.foley import (
    MATERIALS,
    FoleyConfig,
    ModalBank,
    clip_seed,
    make_split,
    mix_events,
    silent_contacts,
    simulate,
)
from soundvcm.media.audio import load_audio
from soundvcm.media.video import probe

CFG = FoleyConfig(duration=3.0, ambient_db=None)


def test_scenes_are_a_function_of_the_seed():
    a, b, c = simulate(CFG, 5), simulate(CFG, 5), simulate(CFG, 6)
    assert [e.__dict__ for e in a.events] == [e.__dict__ for e in b.events] and a.objects == b.objects
    assert [e.time for e in a.events] != [e.time for e in c.events]
    assert a.events == sorted(a.events, key=lambda e: e.time) and all(0 <= e.time < CFG.duration for e in a.events)
    assert {e.material for e in a.events} <= {o["material"] for o in a.objects}


def test_each_contact_sounds_from_its_exact_sample():
    """Adding event k to the mix changes nothing before sample round(t_k * sr), and changes that sample."""
    bank = ModalBank(CFG.sample_rate)
    sr, total = bank.sample_rate, int(CFG.duration * bank.sample_rate)
    checked = 0
    for seed in range(3):
        events = simulate(CFG, seed).events
        for k, event in enumerate(events):
            without = mix_events(events[:k], bank, total, np.random.default_rng(seed))
            with_k = mix_events(events[: k + 1], bank, total, np.random.default_rng(seed))
            changed = np.flatnonzero(with_k != without)
            assert changed[0] == int(round(event.time * sr)), (seed, k, event)
            checked += 1
    assert checked >= 20


def _centroid(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x))
    freqs = np.fft.rfftfreq(x.size, 1 / sr)
    return float((spec * freqs).sum() / spec.sum())


def test_materials_sound_different():
    bank = ModalBank(22_050)
    rng = np.random.default_rng(0)
    centroid = {m: np.mean([_centroid(bank.oneshot(m, 1.0, rng), 22_050) for _ in range(8)]) for m in MATERIALS}
    assert centroid["rubber"] < centroid["wood"] < centroid["metal"] < centroid["glass"], centroid


def test_the_picture_shows_each_floor_contact():
    scene = simulate(CFG, 11)
    for e in [e for e in scene.events if e.surface == "floor"]:
        frame = int(round(e.time * CFG.fps))
        if frame >= scene.track.shape[0]:
            continue
        y = scene.track[frame, e.obj, 1]
        # within one frame of motion from the floor contact (height = radius)
        assert abs(y - CFG.radius) <= e.speed / CFG.fps + 0.01, (e, y)


def test_silent_contacts_are_the_visible_bounces_below_the_audible_speed():
    """Re-simulated from a clip's seed and config: the silent contacts lie between the floor and
    min_speed, never on an audible event, and the same world keeps the audible events unchanged."""
    from dataclasses import asdict

    cfg = FoleyConfig()
    found = 0
    for seed in range(6):
        scene = simulate(cfg, seed)
        doc = {"seed": seed, "config": json.loads(json.dumps(asdict(cfg)))}  # as events.json stores it
        silent = silent_contacts(doc, cfg.duration)
        audible = [e.time for e in scene.events]
        assert not set(silent) & set(audible)
        low = simulate(replace(cfg, min_speed=0.4), seed)
        assert [e.time for e in low.events if e.speed >= cfg.min_speed] == audible  # same physics
        assert silent == sorted({e.time for e in low.events if e.speed < cfg.min_speed})
        found += len(silent)
    assert found > 0  # objects coming to rest bounce below the audible speed
    assert silent_contacts(doc, cfg.duration, floor=cfg.min_speed) == []  # nothing between 0.8 and 0.8


def test_split_files_manifest_and_resume(tmp_path):
    cfg = FoleyConfig(duration=2.0, size=64)
    manifest = make_split(tmp_path, "test", 3, cfg)
    rows = manifest.read_text().splitlines()
    assert rows[0] == "path\tcaption" and len(rows) == 4
    path, caption = rows[1].split("\t")
    clip = tmp_path / path
    doc = json.loads(clip.with_name(clip.stem + ".events.json").read_text())
    assert doc["caption"] == caption and doc["seed"] == clip_seed("test", 0)
    info = probe(clip)
    assert info.has_audio and info.width == 64 and abs(info.duration - 2.0) < 0.1
    wave, sr = load_audio(clip.with_suffix(".flac"))
    assert sr == cfg.sample_rate and wave.numel() == 2 * sr
    stamp = clip.stat().st_mtime_ns
    make_split(tmp_path, "test", 3, cfg)  # a rerun skips finished clips
    assert clip.stat().st_mtime_ns == stamp
    assert len({clip_seed(s, i) for s in ("train", "val", "test") for i in range(200)}) == 600


@pytest.mark.parametrize("world", ["foley", "directed"])
def test_a_split_rendered_by_worker_processes_is_the_same_split(tmp_path, world):
    """``jobs`` processes write the same files as one (each clip is drawn from its own seed), the
    manifest keeps the clips' order, and a rerun with workers resumes instead of rendering again."""
    from soundvcm.data import directed

    small = FoleyConfig(duration=1.0, size=64)

    def split(folder, jobs, progress=None):
        if world == "foley":
            return make_split(tmp_path / folder, "train", 4, small, progress=progress, jobs=jobs)
        cfg = directed.DirectedConfig(world=small, swap=0.5, palette=0.0)  # the modal bank has no palette
        return directed.make_split(tmp_path / folder, "train", 4, ModalBank(), [], cfg, progress=progress, jobs=jobs)

    one, two = split("one", 1), split("two", 2)
    assert one.read_text() == two.read_text() and len(one.read_text().splitlines()) == 5
    for name in [line.split("\t")[0] for line in one.read_text().splitlines()[1:]]:
        a, b = tmp_path / "one" / name, tmp_path / "two" / name
        assert (a.parent / f"{a.stem}.events.json").read_text() == (b.parent / f"{b.stem}.events.json").read_text()
        assert np.array_equal(load_audio(a.with_suffix(".flac"))[0], load_audio(b.with_suffix(".flac"))[0])
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "two").rglob("*.mp4")}
    counted = []
    split("two", 2, counted.append)
    assert counted == [4] and all(p.stat().st_mtime_ns == t for p, t in stamps.items())


@pytest.mark.parametrize("material", list(MATERIALS))
def test_every_material_has_a_look_and_a_sound(material):
    m = MATERIALS[material]
    assert m.shape in ("square", "circle", "triangle", "diamond") and 0 < m.restitution < 1
    shot = ModalBank().oneshot(material, 0.5, np.random.default_rng(1))
    assert 0.49 < np.abs(shot).max() <= 0.5 + 1e-6


def test_cli_writes_all_splits(tmp_path, capsys):
    from soundvcm.cli import main

    code = main(["data", "foley", str(tmp_path), "--train", "2", "--val", "1", "--test", "1", "--duration", "1.5"])
    assert code == 0
    for split, n in (("train", 2), ("val", 1), ("test", 1)):
        assert len((tmp_path / f"{split}.tsv").read_text().splitlines()) == n + 1
        assert len(list((tmp_path / split).glob("*.mp4"))) == n


# ----- event onset F1 against the exact event list: known answers ------------------------------------
def _clip(seed: int):
    from soundvcm.data.foley import render_audio

    cfg = FoleyConfig(duration=3.0)
    scene = simulate(cfg, seed)
    return render_audio(cfg, scene, ModalBank(cfg.sample_rate)), [e.time for e in scene.events], cfg.sample_rate


def test_onsets_of_the_exact_soundtrack_score_near_one():
    from soundvcm.evaluation.events import detect_onsets, onset_f1

    scores = []
    for seed in range(6):
        audio, events, sr = _clip(seed)
        scores.append(onset_f1(detect_onsets(torch_wave(audio), sr), events).f1)
    assert np.mean(scores) >= 0.95 and min(scores) >= 0.85, scores


def test_silence_scores_zero_and_a_100ms_shift_misses_every_event():
    from soundvcm.data.foley import Event
    from soundvcm.evaluation.events import detect_onsets, onset_f1

    sr = 22_050
    assert detect_onsets(torch_wave(np.zeros(3 * sr)), sr) == [] and onset_f1([], [0.5]).f1 == 0.0
    quiet_bed = 10 ** (-45 / 20) * np.random.default_rng(0).standard_normal(3 * sr)
    assert detect_onsets(torch_wave(quiet_bed), sr) == []  # a noise bed is not an event
    times = [0.3, 0.75, 1.2, 1.5, 2.1, 2.6]  # well apart: a 100 ms shift cannot meet another event
    events = [Event(t, m, 0, 3.0, "floor") for t, m in zip(times, ["wood", "metal", "glass", "rubber"] * 2)]
    audio = mix_events(events, ModalBank(sr), 3 * sr, np.random.default_rng(0))
    assert onset_f1(detect_onsets(torch_wave(audio), sr), times).f1 == 1.0
    late = np.concatenate([np.zeros(int(0.1 * sr)), audio[: -int(0.1 * sr)]])
    detected = detect_onsets(torch_wave(late), sr)
    assert onset_f1(detected, times, tolerance=0.05).f1 == 0.0
    assert onset_f1(detected, [t + 0.1 for t in times], tolerance=0.05).f1 == 1.0


def test_a_shift_scores_far_below_the_exact_soundtrack_on_real_scenes():
    from soundvcm.evaluation.events import detect_onsets, onset_f1

    exact, shifted = [], []
    for seed in range(6):
        audio, events, sr = _clip(seed)
        exact.append(onset_f1(detect_onsets(torch_wave(audio), sr), events).f1)
        late = np.concatenate([np.zeros(int(0.1 * sr), np.float32), audio[: -int(0.1 * sr)]])
        shifted.append(onset_f1(detect_onsets(torch_wave(late), sr), events).f1)  # chance coincidences only
    # with object-object collisions a 4 s scene has ~12 events, so a shifted onset often lands within
    # 50 ms of *another* event: chance level is ~0.2-0.45 (the bench reports it as a row), not 0
    assert np.mean(shifted) < 0.5 < 0.9 < np.mean(exact), (shifted, exact)


def test_onset_f1_matching_known_answers():
    from soundvcm.evaluation.events import onset_f1

    s = onset_f1([0.10, 0.52, 0.90], [0.12, 0.50, 0.51, 2.0])  # 0.50/0.51 merge into one event
    assert (s.precision, s.recall) == (2 / 3, 2 / 3) and s.matches == [(0, 0), (1, 1)]
    assert onset_f1([], []).f1 == 1.0 and onset_f1([1.0], []).f1 == 0.0


def torch_wave(x):
    import torch

    return torch.as_tensor(np.asarray(x, dtype=np.float32))


def test_material_accuracy_known_answers():
    """The exact soundtrack's isolated events are heard as their materials; the same events played
    with the wrong material's one-shots are not."""
    import torch

    from soundvcm.data.foley import render_audio
    from soundvcm.evaluation.events import MaterialClassifier, detect_onsets, material_accuracy, onset_f1

    bank = ModalBank(22_050)
    cfg = FoleyConfig(duration=4.0)
    train = [simulate(cfg, 1000 + seed) for seed in range(24)]  # references from other scenes
    classifier = MaterialClassifier.fit_clips(
        ((torch.from_numpy(render_audio(cfg, sc, bank)), [(e.time, e.material) for e in sc.events]) for sc in train),
        bank.sample_rate,
    )
    swap = dict(zip(MATERIALS, list(MATERIALS)[1:] + list(MATERIALS)[:1]))  # every material -> another
    right = wrong = scored = 0
    for seed in range(16):
        scene = simulate(FoleyConfig(duration=4.0), seed)
        events = [(e.time, e.material) for e in scene.events]
        for swapped in (False, True):
            if swapped:
                for e in scene.events:
                    e.material = swap[e.material]
            audio = torch.from_numpy(render_audio(FoleyConfig(duration=4.0), scene, bank))
            detected = detect_onsets(audio, bank.sample_rate)
            score = onset_f1(detected, [t for t, _ in events])
            correct, n = material_accuracy(audio, events, score, detected, classifier)
            if swapped:
                wrong += correct
            else:
                right, scored = right + correct, scored + n
    assert scored >= 20 and right / scored >= 0.8 and wrong / scored <= 0.15, (right, wrong, scored)


def test_the_detector_holds_on_a_louder_bed_as_generated_audio_has_it():
    """Issue 23: generated audio carries a louder background than the real soundtracks; the detector
    floors each band at the clip's own bed, so that bed is not an event and the events still count."""
    from soundvcm.evaluation.events import detect_onsets, onset_f1

    rng = np.random.default_rng(1)
    fixed, old = [], []
    for seed in range(6):
        audio, events, sr = _clip(seed)
        noisy = audio + 10 ** (-30 / 20) * rng.standard_normal(audio.size).astype(np.float32)
        fixed.append(onset_f1(detect_onsets(torch_wave(noisy), sr), events).f1)
        old.append(onset_f1(detect_onsets(torch_wave(noisy), sr, background=None), events).f1)
    assert np.mean(fixed) >= 0.9 > 0.5 > np.mean(old), (fixed, old)  # the old absolute floor fired on the bed
    bed = 10 ** (-30 / 20) * rng.standard_normal(3 * 22_050).astype(np.float32)
    assert detect_onsets(torch_wave(bed), 22_050) == []
    assert len(detect_onsets(torch_wave(bed), 22_050, background=None)) > 10


def test_onset_accuracy_and_ap_known_answers():
    from soundvcm.evaluation.events import average_precision, onset_acc_ap

    ref = [0.5, 1.0, 2.0]
    assert onset_acc_ap([0.52, 1.05, 1.97], [3.0, 2.0, 1.0], ref) == (1.0, 1.0)  # every event found
    assert onset_acc_ap([], [], ref) == (0.0, 0.0)  # silence
    acc, ap = onset_acc_ap([0.5, 1.0, 2.0, 3.0], [1.0, 1.0, 1.0, 5.0], ref)  # a confident false alarm
    assert acc == 1.0 and ap < 1.0
    assert onset_acc_ap([0.75, 1.25, 2.25], [1.0] * 3, ref)[0] == 0.0  # 0.25 s late: outside ±0.1 s
    assert onset_acc_ap([0.5, 0.52], [1.0, 2.0], [0.5]) == (1.0, 1.0)  # the more confident one matches
    assert abs(average_precision([1, 0, 1, 1], [0.9, 0.8, 0.7, 0.0]) - 0.80556) < 1e-4  # scikit-learn's value
