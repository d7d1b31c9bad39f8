"""``soundvcm bench direction``: does a model take direction (issue 33)? The video should place each
sound, the prompt choose it, and the clip, not the noise seed, shape its texture.

Three measures on the Foley world's test clips, each validated on known answers before any model
is scored (tests/test_direction.py):

* **Texture** (:func:`texture_corr`): the Pearson correlation of the *time-varying part* of two
  log-mel spectrograms (each band's mean over time removed), between outputs for different clips
  under one seed and for one clip under two seeds. The whole-spectrum correlation of ``bench
  listen`` mixes this with the vocoder's fixed spectral shape (its ceiling row scores 0.40); the
  time-varying part of real soundtracks of different clips correlates at ~0.05. Rows: each model,
  the real soundtracks, and the ceiling (the real soundtracks through the model's latent and
  vocoder).
* **Prompt swap** (:func:`swap_items`): test clips whose objects share one material get a caption
  naming another (wood <-> metal, glass <-> rubber). The truth is the same clip re-rendered by the
  Foley world with the swapped material at the same impact times. The material classifier must read
  the original's isolated impacts as the picture's material and the re-render's as the prompted
  one; then, at each model's onsets matched to isolated impacts: the share heard as the prompted
  material, the share heard as the picture's, and onset accuracy (±0.1 s) under the swap. The same
  clips without a prompt give the material accuracy the picture alone reaches.
* **Echoes**, for several seeds: detections per true event, the share of unmatched detections that
  are echoes (<= 0.2 s after a true event), and onset F1, with each clip's own caption.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from soundvcm.bench.listen import SAMPLE_RATE, SPECTRO
from soundvcm.media.audio import load_audio
from soundvcm.media.mel import mel_spectrogram

SWAP = {"wood": "metal", "metal": "wood", "glass": "rubber", "rubber": "glass"}


# ----- texture -----------------------------------------------------------------------------------
def time_varying(wave: Tensor) -> Tensor:
    """(bands, frames) log-mel spectrogram with each band's mean over time removed."""
    spec = mel_spectrogram(wave.flatten().float()[None], SPECTRO)[0]
    return spec - spec.mean(-1, keepdim=True)


def texture_corr(a: Tensor, b: Tensor) -> float:
    """Pearson correlation of two waveforms' time-varying log-mel parts (see the module docstring)."""
    n = min(a.numel(), b.numel())
    x, y = time_varying(a.flatten()[:n]).flatten(), time_varying(b.flatten()[:n]).flatten()
    x, y = x - x.mean(), y - y.mean()
    return float((x @ y) / (x.norm() * y.norm()).clamp_min(1e-12))


def cross_clip(waves: list[Tensor]) -> float:
    """Mean texture correlation over all pairs of different clips."""
    return float(np.mean([texture_corr(waves[i], waves[j]) for i in range(len(waves)) for j in range(i)]))


# ----- the prompt swap ----------------------------------------------------------------------------
@dataclass
class SwapItem:
    video: Path
    picture: str  # the material every object shows (and sounds in the original)
    prompted: str  # the material the caption names (and the re-render sounds)
    caption: str
    events: list[float]  # impact times, the same in both renderings
    isolated: list[float]  # the impacts with no other within 0.15 s (one material each)
    original: Tensor
    truth: Tensor  # the re-render with the prompted material


def swap_items(data: Path, limit: int, duration: float, bank=None) -> list[SwapItem]:
    """Single-material Foley test clips with at least one isolated impact, and their swapped truth
    rendered with ``bank`` (default: the recorded one-shots the open data's clips were made with)."""
    from soundvcm.data import foley
    from soundvcm.data.directed import describe
    from soundvcm.data.oneshots import RecordedBank
    from soundvcm.evaluation.events import isolated_events

    bank = bank or RecordedBank(data / "sources" / "hydrogen-drumkits")
    tsv = data / "foley" / "test.tsv"
    items: list[SwapItem] = []
    for line in tsv.read_text().splitlines()[1:]:
        if len(items) >= limit:
            break
        video = tsv.parent / line.partition("\t")[0]
        doc = json.loads(video.with_suffix(".events.json").read_text())
        materials = {o["material"] for o in doc["objects"]}
        events = [(e["time"], e["material"]) for e in doc["events"] if e["time"] < duration]
        isolated = [t for t, _ in isolated_events(events)]
        if len(materials) != 1 or not isolated:
            continue
        picture = materials.pop()
        cfg = foley.config_from_doc(doc)
        scene = foley.simulate(cfg, int(doc["seed"]))
        if [round(e.time, 6) for e in scene.events] != [e["time"] for e in doc["events"]]:
            raise ValueError(f"{video}: its events do not re-simulate from its seed")
        swapped = [type(e)(e.time, SWAP[e.material], e.obj, e.speed, e.surface) for e in scene.events]
        truth = torch.from_numpy(foley.render_audio(cfg, type(scene)(scene.seed, scene.objects, swapped), bank))
        original, _ = load_audio(video.with_suffix(".flac"), SAMPLE_RATE, duration=duration)
        caption = describe([SWAP[picture]], np.random.default_rng(int(doc["seed"])))
        n = int(round(duration * SAMPLE_RATE))
        items.append(
            SwapItem(video, picture, SWAP[picture], caption, [t for t, _ in events], isolated, original, truth[:n])
        )
    return items


def heard_at_impacts(wave: Tensor, item: SwapItem, classifier) -> tuple[list[str], float]:
    """(the material heard at each isolated impact the onset detector finds, onset accuracy ±0.1 s)."""
    from soundvcm.evaluation.events import detect_onsets_scored, onset_acc_ap, onset_f1

    detected, strength = detect_onsets_scored(wave, SAMPLE_RATE)
    score = onset_f1(detected, item.events)
    heard = []
    for i, j in score.matches:
        if any(abs(score.reference[j] - t) <= 1e-6 for t in item.isolated):
            heard.append(classifier.classify(wave, detected[i]))
    accuracy, _ = onset_acc_ap(detected, strength, item.events)
    return heard, accuracy


def swap_scores(waves: list[Tensor], items: list[SwapItem], classifier) -> dict[str, float]:
    """Shares of the isolated impacts heard as the prompted and as the picture's material, and the
    mean onset accuracy, for one row of outputs (one per item)."""
    prompted = picture = total = 0
    accuracies = []
    for wave, item in zip(waves, items):
        heard, accuracy = heard_at_impacts(wave, item, classifier)
        prompted += sum(h == item.prompted for h in heard)
        picture += sum(h == item.picture for h in heard)
        total += len(heard)
        accuracies.append(accuracy)
    isolated = sum(len(i.isolated) for i in items)
    return {
        "heard as prompted": prompted / total if total else float("nan"),
        "heard as picture": picture / total if total else float("nan"),
        "impacts scored": total / isolated if isolated else float("nan"),
        "onset accuracy": float(np.mean(accuracies)) if accuracies else float("nan"),
    }


def echo_scores(waves: list[Tensor], events: list[list[float]]) -> dict[str, float]:
    """Detections per true event, the echo share of unmatched detections, and pooled onset F1."""
    from soundvcm.evaluation.events import detect_onsets_scored, onset_f1

    tp = fp = fn = echo = 0
    for wave, ref in zip(waves, events):
        detected, _ = detect_onsets_scored(wave, SAMPLE_RATE)
        score = onset_f1(detected, ref)
        matched = {i for i, _ in score.matches}
        tp, fp, fn = tp + len(matched), fp + len(detected) - len(matched), fn + len(score.reference) - len(matched)
        echo += sum(any(0 < d - r <= 0.2 for r in score.reference) for i, d in enumerate(detected) if i not in matched)
    return {
        "detections per event": (tp + fp) / (tp + fn) if tp + fn else float("nan"),
        "echo share": echo / fp if fp else float("nan"),
        "onset F1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0,
    }


# ----- the bench ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DirectionConfig:
    data: Path
    rows: tuple[tuple[str, str] | tuple[str, str, float], ...]  # (name, model[, prompt guidance scale])
    out: Path | None = None
    limit: int = 40  # Foley test clips for texture and echoes
    swap_limit: int = 60  # single-material clips for the swap test
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int | None = None  # sampling steps (None: each model's default)
    duration: float = 4.0
    device: str = "auto"
    precision: str = "auto"


def _foley_clips(data: Path, limit: int, duration: float) -> list[tuple[Path, str, list[float]]]:
    from soundvcm.bench.listen import foley_items

    return [(v, c, [t for t in events if t < duration]) for v, c, events in foley_items(data, "test", limit)]


def run_direction(cfg: DirectionConfig, progress=None) -> dict[str, dict[str, float]]:
    """Every measure for the reference rows and each model row; {row: {measure: value}}."""
    from soundvcm.bench.quality_scores import material_classifier
    from soundvcm.bench.quality_sets import load_sets

    clips = _foley_clips(cfg.data, cfg.limit, cfg.duration)
    items = swap_items(cfg.data, cfg.swap_limit, cfg.duration)
    classifier = material_classifier(load_sets(cfg.data, ("foley",), cfg.duration, limit=1)[0])
    real = [load_audio(v.with_suffix(".flac"), SAMPLE_RATE, duration=cfg.duration)[0] for v, _, _ in clips]
    results: dict[str, dict[str, float]] = {
        "real soundtracks (swap: the re-render)": {
            "texture: different clips": cross_clip(real),
            **{
                f"swap: original {k}": v for k, v in swap_scores([i.original for i in items], items, classifier).items()
            },
            **{f"swap: truth {k}": v for k, v in swap_scores([i.truth for i in items], items, classifier).items()},
            **echo_scores(real, [e for _, _, e in clips]),
        }
    }
    for name, model, *scale in cfg.rows:
        results[name] = _model_row(cfg, model, scale[0] if scale else 0.0, clips, items, classifier, results, progress)
    return results


def _model_row(cfg, model, prompt_scale, clips, items, classifier, results, progress) -> dict[str, float]:
    from soundvcm.pipeline import Pipeline

    pipe = Pipeline.load(model, device=cfg.device, precision=cfg.precision)
    options = pipe.sampler(steps=cfg.steps, prompt_scale=prompt_scale or None)

    def wave(encoded, seed: int) -> Tensor:
        if progress is not None:
            progress(1)
        return pipe.synthesize(encoded, options, seed=seed).wave

    encoded = [pipe.encode(video=v, prompt=c or None, duration=cfg.duration) for v, c, _ in clips]
    by_seed = {s: [wave(e, s) for e in encoded] for s in cfg.seeds}
    first, second = by_seed[cfg.seeds[0]], by_seed[cfg.seeds[-1]]
    row = {
        "texture: different clips": cross_clip(first),
        "texture: different seeds": float(np.mean([texture_corr(a, b) for a, b in zip(first, second)])),
    }
    ceiling_key = f"ceiling ({pipe.encoder_set})"
    if ceiling_key not in results:
        real = [load_audio(v.with_suffix(".flac"), SAMPLE_RATE, duration=cfg.duration)[0] for v, _, _ in clips]
        through = [pipe.encoders.decode_audio(pipe.encoders.encode_audio(w[None].to(pipe.device))[0])[0] for w in real]
        results[ceiling_key] = {"texture: different clips": cross_clip([w.float().cpu() for w in through])}
    per_seed = [echo_scores(by_seed[s], [e for _, _, e in clips]) for s in cfg.seeds]
    for key in per_seed[0]:
        values = [p[key] for p in per_seed]
        row[key] = float(np.mean(values))
        row[f"{key} (seed std)"] = float(np.std(values))
    swapped = [pipe.encode(video=i.video, prompt=i.caption, duration=cfg.duration) for i in items]
    for key, value in swap_scores([wave(e, cfg.seeds[0]) for e in swapped], items, classifier).items():
        row[f"swap: {key}"] = value
    silent = [pipe.encode(video=i.video, duration=cfg.duration) for i in items]
    no_prompt = swap_scores([wave(e, cfg.seeds[0]) for e in silent], items, classifier)
    row["no prompt: heard as picture"] = no_prompt["heard as picture"]
    return row


COLUMNS = (
    ("texture: different clips", "texture, clips"),
    ("texture: different seeds", "texture, seeds"),
    ("swap: heard as prompted", "swap: prompted"),
    ("swap: heard as picture", "swap: picture"),
    ("swap: onset accuracy", "swap: onset acc"),
    ("no prompt: heard as picture", "no prompt: picture"),
    ("detections per event", "detections/event"),
    ("echo share", "echo share"),
    ("onset F1", "onset F1"),
)


def table(results: dict[str, dict[str, float]]) -> str:
    """One row per model and reference; seed spreads in parentheses; '-' where a measure does not apply."""
    head = "| row | " + " | ".join(label for _, label in COLUMNS) + " |"
    lines = [head, "|---|" + "---:|" * len(COLUMNS)]
    for name, row in results.items():
        cells = []
        for key, _ in COLUMNS:
            if key not in row and key.startswith("swap: ") and f"swap: truth {key[6:]}" in row:
                key = f"swap: truth {key[6:]}"  # the reference's swap columns are its truth's
            value = row.get(key)
            if value is None or value != value:
                cells.append("-")
                continue
            spread = row.get(f"{key} (seed std)")
            cells.append(f"{value:.3f}" + (f" ± {spread:.3f}" if spread is not None else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    original = results.get("real soundtracks (swap: the re-render)", {})
    if "swap: original heard as picture" in original:
        lines.append(
            f"\nclassifier check: original soundtracks heard as the picture's material "
            f"{original['swap: original heard as picture']:.3f}, the swapped re-renders as the prompted "
            f"{original['swap: truth heard as prompted']:.3f}"
        )
    return "\n".join(lines)
