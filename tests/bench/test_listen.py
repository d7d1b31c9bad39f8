"""``bench listen``'s measures on known answers: the spectrogram correlation and the sync probe."""

import pytest
import torch

from soundvcm.bench.listen import SAMPLE_RATE, frame_labels, mean_pairwise, probe_scores, spectro_corr

RATE = SAMPLE_RATE / 512  # one latent frame


def _clicks(times, seconds=2.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    wave = 0.01 * torch.randn(int(seconds * SAMPLE_RATE), generator=g)
    for t in times:
        a = int(t * SAMPLE_RATE)
        wave[a : a + 400] += torch.randn(400, generator=g) * torch.linspace(1, 0, 400)
    return wave


def test_spectrogram_correlation_known_answers():
    a, b = _clicks([0.3, 1.1], seed=1), _clicks([0.7, 1.6], seed=2)
    assert abs(spectro_corr(a, a) - 1.0) < 1e-6  # a copy
    assert spectro_corr(a, 0.5 * a) > 0.99  # a gain shifts the log spectrogram (but for the clip floor)
    same_events = spectro_corr(a, _clicks([0.3, 1.1], seed=3))  # same times, other noise
    assert same_events > spectro_corr(a, b) + 0.2  # the events' timing is what correlates
    assert mean_pairwise([a, a, a]) > 0.999


def _probe_clip(seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    length = int(4.0 * RATE)
    events = sorted((torch.rand(3, generator=g) * 3.8).tolist())
    labels = frame_labels(events, length, RATE)
    noise = torch.randn(length, 4, generator=g)
    good = noise.clone()
    good[:, 0] += 6 * labels  # a feature that shows each impact in its frame
    return {"feats": {"good": good, "noise": noise}, "events": events, "labels": labels}


@pytest.mark.slow
def test_the_probe_reads_an_informative_feature_and_not_noise():
    train = [_probe_clip(i) for i in range(60)]
    test = [_probe_clip(100 + i) for i in range(20)]
    rows = probe_scores(train, test, RATE)
    assert rows["perfect per-frame classifier"]["test F1"] > 0.95
    assert rows["good"]["test F1"] > 0.9
    assert rows["noise"]["test F1"] < 0.5
    assert rows["another clip's events (chance)"]["test F1"] < 0.5


@pytest.mark.slow
def test_sensitivity_runs_a_model_through_its_swaps(tmp_path):
    """The condition-sensitivity rows on a tiny random lite model and three clips: every correlation is
    computed, and a pair of identical runs (same clip, same seed) would be 1."""
    from media_factory import make_video
    from model_factory import debug_model as _model
    from soundvcm.bench.listen import sensitivity
    from soundvcm.pipeline import Pipeline

    pipe = Pipeline.load(_model(tmp_path / "vcm"))
    items = [
        (make_video(tmp_path / f"c{i}.mp4", duration=2.0, size=(96, 64), fps=24), f"clip {i}", []) for i in range(3)
    ]
    rows = sensitivity(pipe, items, (0, 1), 1.0)
    assert set(rows) == {
        "same seed, different clips",
        "same clip, different seeds",
        "sync from B: corr to A's output",
        "sync from B: corr to B's output",
        "text from B: corr to A's output",
        "text from B: corr to B's output",
    }
    assert all(-1.0 <= v <= 1.0 + 1e-6 for v in rows.values())
    assert rows["same clip, different seeds"] < 1.0 - 1e-3  # the seed changes the output


def test_the_probe_reads_the_world_it_is_given(tmp_path):
    """--probe-world directed: the items (and so the probe's clips) come from that part's split."""
    import json

    from soundvcm.bench.listen import foley_items

    for world, times in (("foley", [0.5]), ("directed", [0.25, 1.5])):
        split = tmp_path / world / "test"
        split.mkdir(parents=True)
        (split / "c0.events.json").write_text(json.dumps({"events": [{"time": t} for t in times]}))
        (tmp_path / world / "test.tsv").write_text("path\tcaption\ntest/c0.mp4\ta clip\n")
    assert foley_items(tmp_path, "test", 5)[0][2] == [0.5]
    video, caption, events = foley_items(tmp_path, "test", 5, "directed")[0]
    assert video == tmp_path / "directed" / "test" / "c0.mp4" and events == [0.25, 1.5]
    with pytest.raises(FileNotFoundError, match="data open"):
        foley_items(tmp_path / "nothing", "test", 5, "directed")
