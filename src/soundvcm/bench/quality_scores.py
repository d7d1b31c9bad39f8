"""Scoring of ``soundvcm bench quality``'s rows: the project's ``evaluate`` (FD, KID, KL) plus the event
metrics of the Foley world (onset F1, accuracy and AP, detections per event, timing error,
material accuracy), and the table of every row (see :mod:`soundvcm.bench.quality`)."""

from __future__ import annotations

import functools
import json
import math
from itertools import islice
from pathlib import Path

import numpy as np

from soundvcm.bench.quality_sets import TestSet
from soundvcm.media.audio import load_audio

SAMPLE_RATE = 22_050


def event_scores(folder: Path, ts: TestSet, classifier) -> dict[str, float]:
    """Onset F1 (pooled), onset accuracy and AP at ±0.1 s (CondFoleyGen's protocol, per clip, averaged),
    detections per event, timing error of matched onsets, material accuracy of isolated matches."""
    from soundvcm.evaluation.events import detect_onsets_scored, material_accuracy, onset_acc_ap, onset_f1

    tp = fp = fn = correct = scored = echo = at_silent = 0
    errors: list[float] = []
    accs, aps = [], []
    for item in ts.items:
        wave, _ = load_audio(folder / f"{item.name}.flac", SAMPLE_RATE)
        detected, strength = detect_onsets_scored(wave, SAMPLE_RATE)
        events = item.events or []
        score = onset_f1(detected, [t for t, _ in events])
        acc, ap = onset_acc_ap(detected, strength, [t for t, _ in events])
        accs.append(acc)
        aps.append(ap)
        tp += len(score.matches)
        fp += len(detected) - len(score.matches)
        fn += len(score.reference) - len(score.matches)
        errors += [detected[i] - score.reference[j] for i, j in score.matches]
        echoes, on_silent = _spurious_kinds(detected, score, item.silent or [])
        echo, at_silent = echo + echoes, at_silent + on_silent
        c, s = material_accuracy(wave, events, score, detected, classifier)
        correct, scored = correct + c, scored + s
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    return {
        "Onset-F1": f1,
        "Onset-Acc": float(np.mean(accs)) if accs else math.nan,
        "Onset-AP": float(np.mean(aps)) if aps else math.nan,
        "Detections-per-event": (tp + fp) / (tp + fn) if tp + fn else math.nan,
        "Onset-precision": tp / (tp + fp) if tp + fp else 0.0,
        "Onset-recall": tp / (tp + fn) if tp + fn else 0.0,
        "Event-error-ms": 1000 * float(np.mean(errors)) if errors else math.nan,
        "Event-abs-error-ms": 1000 * float(np.mean(np.abs(errors))) if errors else math.nan,
        # what the spurious detections are: a second onset <= 0.2 s after a true event, or a bounce
        # the picture shows but the world keeps silent (shares of all unmatched detections)
        "FP-echo-share": echo / fp if fp else math.nan,
        "FP-silent-contact-share": at_silent / fp if fp else math.nan,
        "Material-accuracy": correct / scored if scored else math.nan,
        "Material-scored": scored,
    }


def file_onsets(path: Path) -> list[float]:
    """The onsets detected in an audio file, remembered for the file as it is now (path, size and
    modification time): every row of a run is scored against the same originals."""
    st = path.stat()
    return list(_onsets_of(str(path), st.st_size, st.st_mtime_ns))


@functools.lru_cache(maxsize=4096)
def _onsets_of(path: str, size: int, mtime_ns: int) -> tuple[float, ...]:
    from soundvcm.evaluation.events import detect_onsets

    return tuple(detect_onsets(load_audio(Path(path), SAMPLE_RATE)[0], SAMPLE_RATE))


def original_onset_scores(
    folder: Path, gt: Path, ts: TestSet, tolerance: float = 0.1, draws: int = 1000
) -> dict[str, float]:
    """Real footage (no exact events): onsets of each output against the onsets detected in its own
    clip's original soundtrack (where the picture's events sound), pooled F1 at ``tolerance``
    (CondFoleyGen's +-0.1 s), beside its chance level: the same outputs paired with the originals of
    ``draws`` random derangements (no clip with its own), their mean and 95th percentile. The
    margin (own - mean) is what the picture placed; own above the 95th percentile is its evidence."""
    from soundvcm.evaluation.events import onset_f1

    truth = [file_onsets(gt / f"{item.name}.flac") for item in ts.items]
    output = [file_onsets(folder / f"{item.name}.flac") for item in ts.items]
    n = len(ts.items)
    counts = np.zeros((n, n, 3))  # (output i, original j): true positives, false positives, misses
    for i in range(n):
        for j in range(n):
            matched = len(onset_f1(output[i], truth[j], tolerance).matches)
            counts[i, j] = matched, len(output[i]) - matched, len(truth[j]) - matched

    def pooled(pairing: np.ndarray) -> float:
        tp, fp, fn = counts[np.arange(n), pairing].sum(axis=0)
        return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan

    own = pooled(np.arange(n))
    chance = [math.nan]
    if n > 1:
        rng = np.random.default_rng(0)
        perms = (rng.permutation(n) for _ in range(20 * draws))
        chance = [pooled(p) for p in islice((p for p in perms if (p != np.arange(n)).all()), draws)]
    return {
        "Orig-onset-F1": own,
        "Orig-onset-F1-chance": float(np.mean(chance)),
        "Orig-onset-chance-p95": float(np.percentile(chance, 95)),
        "Orig-onset-margin": own - float(np.mean(chance)),
    }


def _spurious_kinds(detected: list[float], score, silent: list[float], tolerance: float = 0.05) -> tuple[int, int]:
    """Of the unmatched detections: how many sit within ``tolerance`` of a silent contact, and how
    many of the rest follow a true event by at most 0.2 s (an echo of it)."""
    matched = {i for i, _ in score.matches}
    echo = at_silent = 0
    for i, d in enumerate(detected):
        if i in matched:
            continue
        if any(abs(d - t) <= tolerance for t in silent):
            at_silent += 1
        elif any(0 < d - r <= 0.2 for r in score.reference):
            echo += 1
    return echo, at_silent


def material_classifier(ts: TestSet):
    from soundvcm.evaluation.events import MaterialClassifier

    clips = ((load_audio(p, SAMPLE_RATE)[0], events) for p, events in ts.train_events)
    return MaterialClassifier.fit_clips(clips, SAMPLE_RATE)


def score_row(folder: Path, gt: Path, ts: TestSet, duration: float, classifier) -> dict[str, float]:
    from soundvcm.evaluation.evaluate import evaluate

    # only this run's clips: a folder may hold more from an earlier run with a larger --limit
    result = evaluate(folder, gt, audio_length=duration, progress=False, only={item.name for item in ts.items})
    keep = ("FD-AISFX", "KID-AISFX", "KL-AISFX", "ISC-AISFX", "Onset-Lag-ms")
    metrics = {k: float(result[k]) for k in keep if k in result}
    if ts.events_known:
        metrics.update(event_scores(folder, ts, classifier))
    elif ts.real_footage:  # onsets against the original's
        metrics.update(original_onset_scores(folder, gt, ts))
    timings = json.loads((folder / "timings.json").read_text())
    metrics["s/clip"] = timings["s_per_clip"]
    if "stages" in timings:
        metrics["network s/clip"] = timings["stages"].get("network", math.nan)
        metrics["NFE"] = timings["stages"].get("nfe", math.nan)
    return metrics


COLUMNS = (
    "FD-AISFX",
    "KID-AISFX",
    "KL-AISFX",
    "Onset-Lag-ms",
    "Onset-F1",
    "Onset-Acc",
    "Onset-AP",
    "Detections-per-event",
    "Event-abs-error-ms",
    "FP-echo-share",
    "FP-silent-contact-share",
    "Material-accuracy",
    "Orig-onset-F1",
    "Orig-onset-F1-chance",
    "Orig-onset-chance-p95",
    "Orig-onset-margin",
    "NFE",
    "network s/clip",
    "s/clip",
)


def table(results: dict[str, dict[str, dict[str, float]]], sets: list[TestSet]) -> str:
    lines = []
    for ts in sets:
        rows = results.get(ts.name, {})
        cols = [c for c in COLUMNS if any(c in m for m in rows.values())]
        lines += [
            f"\n### {ts.name} ({len(ts.items)} test clips)\n",
            "| row | " + " | ".join(cols) + " |",
            "|---" * (len(cols) + 1) + "|",
        ]
        for name, m in rows.items():
            cells = []
            for c in cols:
                v = m.get(c)
                cells.append(
                    "-"
                    if v is None or (isinstance(v, float) and math.isnan(v))
                    else f"{v:.0f}"
                    if c == "NFE"
                    else f"{v:.3g}"
                    if abs(v) < 100
                    else f"{v:.1f}"
                )
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
