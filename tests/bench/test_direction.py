"""Issue 33's measures on known answers, before any model is scored with them (``bench direction``),
and the directed Foley world's data: the picture sets the times, the caption names what is heard."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from soundvcm.bench.direction import SWAP, echo_scores, swap_items, swap_scores, texture_corr
from soundvcm.bench.listen import spectro_corr
from soundvcm.data import directed, foley
from soundvcm.data.oneshots import PALETTE, RECORDED
from soundvcm.evaluation.events import MaterialClassifier

SR = 22_050


def _impacts(times: list[float], seconds: float = 4.0, seed: int = 0) -> torch.Tensor:
    """Decaying tone bursts at ``times`` over a quiet bed of low-passed noise (a fixed spectral tilt,
    as a vocoder's own colour gives every output)."""
    g = torch.Generator().manual_seed(seed)
    white = torch.randn(int(seconds * SR), generator=g).numpy()
    bed = np.empty_like(white)
    acc = 0.0
    for i, x in enumerate(white):  # one-pole low-pass at ~350 Hz: the bed's level falls with frequency
        acc += 0.1 * (x - acc)
        bed[i] = acc
    wave = torch.from_numpy(0.01 * bed / bed.std()).float()
    t = torch.arange(int(0.3 * SR)) / SR
    burst = torch.sin(2 * math.pi * 900 * t) * torch.exp(-t / 0.05)
    for at in times:
        i = int(at * SR)
        wave[i : i + burst.numel()] += burst[: wave.numel() - i]
    return wave


# ----- texture --------------------------------------------------------------------------------------
def test_texture_correlation_known_answers():
    a = _impacts([0.5, 1.7, 3.1])
    assert texture_corr(a, a) == pytest.approx(1.0, abs=1e-6)
    g = torch.Generator().manual_seed(1)
    noise_a, noise_b = torch.randn(4 * SR, generator=g), torch.randn(4 * SR, generator=g)
    assert abs(texture_corr(noise_a, noise_b)) < 0.05  # independent noise: ~0 (std ~0.007 over 22k cells)
    # the same sound at other times: the whole spectrum correlates (one spectral shape), the
    # time-varying part does not -- the bias the whole-spectrum measure of bench listen carries
    b = _impacts([1.0, 2.4, 3.6], seed=2)
    assert spectro_corr(a, b) > 0.5 and abs(texture_corr(a, b)) < 0.15
    same_times = _impacts([0.5, 1.7, 3.1], seed=5)  # the same events over another noise bed
    assert texture_corr(a, same_times) > 0.6


# ----- the prompt swap ---------------------------------------------------------------------------------
class FixedBank(foley.ModalBank):
    """One fixed modal one-shot per material (the modal bank draws new mode frequencies per hit,
    which makes glass and metal overlap): a world whose materials are told apart for certain, so
    the test checks the swap's bookkeeping, not a classifier's limits."""

    def oneshot(self, material: str, strength: float, rng: np.random.Generator) -> np.ndarray:
        own = np.random.default_rng(sorted(foley.MATERIALS).index(material))
        return super().oneshot(material, strength, own)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A small Foley test split voiced by a fixed bank, and a classifier fit on its training clips."""
    from soundvcm.media.audio import load_audio

    root = tmp_path_factory.mktemp("open")
    bank = FixedBank()
    foley.make_split(root / "foley", "test", 40, foley.FoleyConfig(), bank)
    foley.make_split(root / "foley", "train", 40, foley.FoleyConfig(), bank)
    clips = []
    for flac in sorted((root / "foley" / "train").glob("*.flac")):  # as bench quality fits it: heard in context
        doc = json.loads(flac.with_name(flac.stem + ".events.json").read_text())
        clips.append((load_audio(flac, SR)[0], [(e["time"], e["material"]) for e in doc["events"]]))
    return root, bank, MaterialClassifier.fit_clips(clips, SR)


def test_swap_items_rebuild_the_same_impacts_with_the_other_material(world):
    root, bank, classifier = world
    items = swap_items(root, 40, 4.0, bank)
    assert items and all(i.prompted == SWAP[i.picture] != i.picture for i in items)
    for item in items:
        doc = json.loads(item.video.with_suffix(".events.json").read_text())
        assert {o["material"] for o in doc["objects"]} == {item.picture}
        assert item.events == [e["time"] for e in doc["events"] if e["time"] < 4.0]
        assert (
            item.prompted.split()[0] in item.caption
            or any(noun in item.caption for noun in directed.VOICE_WORDS[item.prompted][0])
            or item.caption == directed.PLAIN[item.prompted]
        )
    # the classifier's check: originals are the picture's material, re-renders the prompted one (the
    # bench prints the same check on the open data's recorded one-shots: 1.00 and 0.99)
    original = swap_scores([i.original for i in items], items, classifier)
    truth = swap_scores([i.truth for i in items], items, classifier)
    assert original["heard as picture"] >= 0.9 and original["heard as prompted"] <= 0.05
    assert truth["heard as prompted"] >= 0.9 and truth["heard as picture"] <= 0.05
    assert truth["onset accuracy"] >= 0.9 and truth["impacts scored"] >= 0.9
    # silence is heard as nothing: no impact scored, shares undefined, onsets missed
    silent = swap_scores([torch.zeros_like(i.original) for i in items], items, classifier)
    assert math.isnan(silent["heard as prompted"]) and silent["impacts scored"] == 0 and silent["onset accuracy"] < 0.5


def test_echo_scores_count_a_second_onset_after_each_event():
    times = [[0.4, 1.3, 2.6], [0.8, 2.0, 3.2]]
    clean = [_impacts(t, seed=i) for i, t in enumerate(times)]
    echoed = [w + 0.8 * torch.roll(w, int(0.12 * SR)) for w in clean]  # each burst again 120 ms later
    assert echo_scores(clean, times)["detections per event"] == pytest.approx(1.0)
    assert echo_scores(clean, times)["onset F1"] == pytest.approx(1.0)
    scores = echo_scores(echoed, times)
    assert scores["detections per event"] == pytest.approx(2.0) and scores["echo share"] == pytest.approx(1.0)
    other = echo_scores(clean, times[::-1])  # another clip's events: chance
    assert other["onset F1"] < 0.5


# ----- the directed world ------------------------------------------------------------------------------
def test_every_voice_has_recorded_shots_and_caption_words():
    assert set(directed.VOICE_WORDS) == set(RECORDED) | set(PALETTE)
    assert set(directed.MATERIALS) == set(foley.MATERIALS) == set(RECORDED)


def test_a_directed_clip_keeps_the_pictures_times_and_sounds_its_caption(tmp_path):
    bank = foley.ModalBank()
    cfg = directed.DirectedConfig(swap=1.0, palette=0.0, backdrop=0.0, camera=1.0)
    doc = directed.make_clip(tmp_path / "c", cfg, 7, bank, [])
    scene = foley.simulate(cfg.world, 7)
    assert [e["time"] for e in doc["events"]] == [e.time for e in scene.events]  # the picture's times
    assert doc["mode"] == "swap" and all(v != p for v, p in zip(doc["voices"], doc["pictured"]))
    assert [e["material"] for e in doc["events"]] == [doc["voices"][e.obj] for e in scene.events]
    for voice in set(doc["voices"]):
        assert any(w in doc["caption"] for w in (*directed.VOICE_WORDS[voice][0], directed.PLAIN.get(voice, "@")))
    for material in set(doc["pictured"]) - set(doc["voices"]):
        assert not any(w in doc["caption"] for w in directed.VOICE_WORDS[material][0])
    assert (tmp_path / "c.mp4").is_file() and (tmp_path / "c.flac").is_file()


def test_modes_and_empty_captions_follow_their_shares():
    rng = np.random.default_rng(0)
    cfg = directed.DirectedConfig()
    docs = []
    for seed in range(400):
        r = np.random.default_rng(seed + 3)
        u = r.random()
        mode = "swap" if u < cfg.swap else "palette" if u < cfg.swap + cfg.palette else "match"
        empty = mode == "match" and r.random() < cfg.empty_caption
        docs.append({"mode": mode, "caption": "" if empty else "x"})
    shares = directed.mode_shares(docs)
    assert abs(shares["swap"] - 0.3) < 0.07 and abs(shares["palette"] - 0.2) < 0.06
    assert abs(shares["empty caption"] - 0.5 * 0.2) < 0.05
    assert directed.describe(["wood", "wood"], rng) and directed.describe(["metal", "glass"], rng, partial=True)


def test_filmed_frames_move_with_the_camera_and_keep_the_objects(tmp_path):
    cfg = foley.FoleyConfig()
    scene = foley.simulate(cfg, 3)
    backdrop = (np.arange(180 * 320 * 3) % 251).reshape(180, 320, 3).astype(np.uint8)
    still = directed.Look(backdrop, (0.0, 0.0), 0.0, (1.0, 1.0), 0.0)
    panning = directed.Look(backdrop, (6.0, 0.0), 0.0, (1.0, 1.0), 0.0)
    a, b = directed.render_frames(cfg, scene, still, 0), directed.render_frames(cfg, scene, panning, 0)
    assert a.shape == b.shape == (96, cfg.size, cfg.size, 3)
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[-1], b[-1])  # the camera has moved by the end
    plain = foley.render_frames(cfg, scene)
    colours = {m.colour for m in foley.MATERIALS.values()}
    seen = {tuple(int(v) for v in px) for px in a[48].reshape(-1, 3)} & colours
    assert seen == {tuple(int(v) for v in px) for px in plain[48].reshape(-1, 3)} & colours  # same objects
