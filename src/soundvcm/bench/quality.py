"""``soundvcm bench quality``: every held-out test set of the open data, every model row and the
reference rows, scored by the project's ``evaluate`` plus event metrics, one table per test set.

Test sets (written by ``soundvcm data open OUT``):

* ``foley``: video-to-audio on the synthetic Foley world. Besides FD/KID/KL, its exact event lists
  give **onset F1** (one-to-one matches within +-50 ms, pooled over clips), the signed and absolute
  **event timing error** of matched onsets, and **material accuracy** of matched isolated events
  (k-NN over impact profiles fitted on the *training* split's exact soundtracks, see
  :class:`soundvcm.evaluation.events.MaterialClassifier`).
* ``bbb``: video-to-audio on the held-out last 15 % of Big Buck Bunny.
* ``sfx``: text-to-audio on the held-out 15 % of each sound-effect class (the caption is the prompt).

Rows: ``NAME=MODEL[:SAMPLER[:STEPS[:CFG]]]`` (a model name or checkpoint path; sampler
``consistency`` or ``euler``), plus reference rows that need no model: ``silence``, ``random
train clip`` (a seeded draw from the training split), ``ceiling`` (the ground truth through the
lite latent and the HiFi-GAN vocoder: what a perfect network could reach) and ``gt +100 ms`` (the
ground truth delayed by 100 ms: the chance level of onset F1 at +-50 ms on dense scenes). Each
``--ceiling-vocoder V`` adds a row ``ceiling V``: the same through another vocoder (``fast``, the
distilled student, or a `soundvcm vocoder export` path), how a lighter vocoder is judged (issue 22);
each ``--ceiling-latent SET`` a row ``ceiling@SET``: the ground truth through another encoder set's
latent (``lite3``: the mel VAE) and HiFi-GAN, the ceiling of a model generating in that latent.

The ground truth is compared at the generator's rate (22.05 kHz for the lite set), so that the
rows differ by what they generate, not by bandwidth. Each model row's conditions are encoded
once per clip and shared by the rows of that model; "s/clip" is decode + encoders + sampling +
vocoder for one clip (the shared encoding counted in full for every row). Outputs: ``OUT/SET/ROW/
*.flac``, ``OUT/quality.json``, ``OUT/SET_spectrograms.png`` and ``OUT/foley_sync.png``. A rerun
skips rows whose folder is complete.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from soundvcm.atomic import atomic_write
from soundvcm.bench.quality_figures import spectrogram_grid, sync_plot
from soundvcm.bench.quality_scores import material_classifier, score_row, table
from soundvcm.bench.quality_sets import SETS, Item, TestSet, load_sets, row_dir
from soundvcm.media.audio import load_audio, write_audio

SAMPLE_RATE = 22_050
REFERENCES = ("silence", "noise bed", "random train clip", "other clip", "ceiling", "gt +100 ms")
NOISE_BED_DBFS = -30.0  # the "noise bed" row: white noise at this level, no events


@dataclass(frozen=True)
class Row:
    name: str
    model: str | None = None  # None: a reference row
    sampler: str | None = None
    steps: int | None = None
    cfg: float | None = None  # Euler rows: the CFG strength (None: the sampler's default, 4.5)

    @classmethod
    def parse(cls, text: str) -> Row:
        """``NAME=MODEL[:SAMPLER[:STEPS[:CFG]]]``."""
        name, sep, spec = text.partition("=")
        if not sep or not name or not spec:
            raise ValueError(
                f"bad --row {text!r}: use NAME=MODEL[:SAMPLER[:STEPS[:CFG]]], e.g. vcm@1=default:consistency:1"
            )
        parts = spec.split(":")
        model, sampler = parts[0], (parts[1] if len(parts) > 1 and parts[1] else None)
        if sampler not in (None, "consistency", "euler"):
            raise ValueError(f"bad --row {text!r}: sampler must be consistency or euler, got {sampler!r}")
        try:
            steps = int(parts[2]) if len(parts) > 2 and parts[2] else None
            cfg = float(parts[3]) if len(parts) > 3 and parts[3] else None
        except ValueError:
            raise ValueError(f"bad --row {text!r}: STEPS is a whole number and CFG a number") from None
        if steps is not None and steps < 1:
            raise ValueError(f"bad --row {text!r}: STEPS must be >= 1")
        if name in REFERENCES or "/" in name:
            raise ValueError(f"bad --row {text!r}: the name may not contain '/' or be a reference row's name")
        return cls(name, model, sampler, steps, cfg)


def _fit(wave: torch.Tensor, n: int) -> torch.Tensor:
    wave = wave.flatten()[:n]
    return torch.nn.functional.pad(wave, (0, n - wave.numel()))


def write_ground_truth(ts: TestSet, out: Path, duration: float) -> Path:
    folder = out / ts.name / "gt"
    n = int(round(duration * SAMPLE_RATE))
    for item in ts.items:
        target = folder / f"{item.name}.flac"
        if not target.is_file():
            wave, _ = load_audio(item.gt, SAMPLE_RATE, duration=duration)
            write_audio(target, _fit(wave, n), SAMPLE_RATE)
    return folder


def reference_audio(row: str, ts: TestSet, item: Item, index: int, duration: float, seed: int, encoders=None):
    n = int(round(duration * SAMPLE_RATE))
    if row == "silence":
        return torch.zeros(n)
    if row == "noise bed":  # a generated bed with nothing in it: the onset metric must find nothing
        g = torch.Generator().manual_seed(seed * 1_000_003 + index)
        return torch.randn(n, generator=g) * 10 ** (NOISE_BED_DBFS / 20)
    if row == "other clip":  # another test clip's real soundtrack: the chance level of every event metric
        item = ts.items[(index + 1) % len(ts.items)]
    if row == "random train clip":
        rng = np.random.default_rng([seed, index])
        wave, _ = load_audio(ts.train_audio[int(rng.integers(len(ts.train_audio)))], SAMPLE_RATE, duration=duration)
        return _fit(wave, n)
    wave, _ = load_audio(item.gt, SAMPLE_RATE, duration=duration)
    wave = _fit(wave, n)
    if row == "other clip":
        return wave
    if row == "gt +100 ms":
        shift = int(round(0.1 * SAMPLE_RATE))
        return torch.cat([torch.zeros(shift), wave[: n - shift]])
    if row.startswith("ceiling"):  # "ceiling", "ceiling VOCODER" and "ceiling@SET"
        mean, _ = encoders.encode_audio(wave[None])
        return _fit(encoders.decode_audio(mean)[0].float().cpu().clamp(-1, 1), n)
    raise ValueError(f"unknown reference row {row!r}")


def _complete(folder: Path, ts: TestSet) -> bool:
    return (folder / "timings.json").is_file() and all((folder / f"{i.name}.flac").is_file() for i in ts.items)


def reference_rows(vocoders: tuple[str, ...] = (), latents: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The reference rows: :data:`REFERENCES`, a ``ceiling V`` row per extra vocoder and a
    ``ceiling@SET`` row per extra latent."""
    return REFERENCES + tuple(f"ceiling {v}" for v in vocoders) + tuple(f"ceiling@{s}" for s in latents)


def ceiling_parts(row: str) -> tuple[str, str]:
    """(encoder set, vocoder) of a ceiling row: ``ceiling`` -> lite + HiFi-GAN, ``ceiling V`` -> lite + V,
    ``ceiling@SET`` -> SET's latent + HiFi-GAN."""
    rest = row.removeprefix("ceiling")
    if rest.startswith("@"):
        return rest[1:], "hifigan"
    return "lite", rest.strip() or "hifigan"


def run_references(
    ts: TestSet,
    out: Path,
    duration: float,
    seed: int,
    progress,
    precision: str = "auto",
    vocoders: tuple[str, ...] = (),
    latents: tuple[str, ...] = (),
) -> None:
    from soundvcm.encoders import load_encoder_set

    for row in reference_rows(vocoders, latents):
        folder = row_dir(out, ts.name, row)
        if _complete(folder, ts):
            continue
        encoders = None
        if row.startswith("ceiling"):
            encoder_set, vocoder = ceiling_parts(row)
            encoders = load_encoder_set(encoder_set, device="cpu", precision=precision, vocoder=vocoder)
        start = time.perf_counter()
        for index, item in enumerate(ts.items):
            wave = reference_audio(row, ts, item, index, duration, seed, encoders)
            write_audio(folder / f"{item.name}.flac", wave, SAMPLE_RATE)
            progress(1)
        per_clip = (time.perf_counter() - start) / max(1, len(ts.items))
        _write_json(folder / "timings.json", {"s_per_clip": per_clip})


def run_model(
    rows: list[Row], ts: TestSet, out: Path, duration: float, seed: int, device: str, progress, precision: str = "auto"
) -> None:
    """All rows of one model: each clip encoded once, then sampled per row."""
    from soundvcm.pipeline import Pipeline, StageTimer

    todo = [r for r in rows if not _complete(row_dir(out, ts.name, r.name), ts)]
    if not todo:
        return
    model = todo[0].model
    if model is None:
        raise ValueError(f"row {todo[0].name} names no model")
    pipe = Pipeline.load(model, device=device, precision=precision)
    if pipe.sample_rate != SAMPLE_RATE:
        raise ValueError(
            f"{todo[0].model}: generates at {pipe.sample_rate} Hz; the quality bench compares at {SAMPLE_RATE} Hz"
        )
    times: dict[str, list[dict]] = {r.name: [] for r in todo}
    for item in ts.items:
        timer = StageTimer(pipe.device)
        if item.media is not None:
            encoded = pipe.encode(video=item.media, duration=duration, timer=timer)
        else:
            encoded = pipe.encode(prompt=item.caption, duration=duration, timer=timer)
        for r in todo:
            t = StageTimer(pipe.device)
            options = pipe.sampler(r.sampler, steps=r.steps, cfg_scale=r.cfg)
            result = pipe.synthesize(encoded, options, seed, timer=t)
            write_audio(
                row_dir(out, ts.name, r.name) / f"{item.name}.flac",
                _fit(result.wave, int(round(duration * SAMPLE_RATE))),
                SAMPLE_RATE,
            )
            times[r.name].append({**result.timings, "nfe": result.nfe})
            progress(1)
    for r in todo:
        stages = {k: float(np.mean([t.get(k, 0.0) for t in times[r.name]])) for k in times[r.name][0]}
        doc = {
            "s_per_clip": sum(v for k, v in stages.items() if k != "nfe"),
            "stages": stages,
            "model": r.model,
            "sampler": r.sampler or pipe.default_sampler(),
            "steps": r.steps,
            "precision": pipe.precision.to_dict(),
        }
        _write_json(row_dir(out, ts.name, r.name) / "timings.json", doc)


def _write_json(path: Path, doc: dict, indent: int | None = None) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(doc, indent=indent, default=str)))


# ----- the whole bench ------------------------------------------------------------------------------
@dataclass(frozen=True)
class QualityConfig:
    data: Path
    out: Path
    rows: tuple[Row, ...] = ()
    sets: tuple[str, ...] = SETS
    duration: float = 4.0
    limit: int | None = None
    seed: int = 0
    references: bool = True
    device: str = "cpu"
    precision: str = "auto"  # of the models' encoders, network and vocoder, and of the ceiling row (soundvcm.precision)
    ceiling_vocoders: tuple[str, ...] = ()  # a "ceiling V" reference row for each
    ceiling_latents: tuple[str, ...] = ()  # a "ceiling@SET" reference row for each encoder set


def run_quality(cfg: QualityConfig) -> dict:
    from tqdm import tqdm

    sets = load_sets(Path(cfg.data), cfg.sets, cfg.duration, cfg.limit)
    out = Path(cfg.out)
    models: dict[str, list[Row]] = {}
    for r in cfg.rows:
        models.setdefault(r.model or "", []).append(r)
    references = reference_rows(cfg.ceiling_vocoders, cfg.ceiling_latents) if cfg.references else ()
    row_names = [r.name for r in cfg.rows] + list(references)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for ts in sets:
        gt = write_ground_truth(ts, out, cfg.duration)
        total = len(ts.items) * (len(cfg.rows) + len(references))
        with tqdm(total=total, desc=f"quality {ts.name}", unit="clip", file=sys.stderr) as bar:
            for rows in models.values():
                run_model(rows, ts, out, cfg.duration, cfg.seed, cfg.device, bar.update, cfg.precision)
            if cfg.references:
                run_references(
                    ts,
                    out,
                    cfg.duration,
                    cfg.seed,
                    bar.update,
                    cfg.precision,
                    cfg.ceiling_vocoders,
                    cfg.ceiling_latents,
                )
        classifier = material_classifier(ts) if ts.events_known else None
        results[ts.name] = {
            name: score_row(row_dir(out, ts.name, name), gt, ts, cfg.duration, classifier) for name in row_names
        }
        spectrogram_grid(out, ts, row_names, SAMPLE_RATE)
        if ts.events_known:
            sync_plot(out, ts, row_names, SAMPLE_RATE)
    doc: dict[str, Any] = {
        "config": {**asdict(cfg), "data": str(cfg.data), "out": str(cfg.out)},
        "results": results,
        "clips": {ts.name: len(ts.items) for ts in sets},
    }
    _write_json(out / "quality.json", doc, indent=1)
    doc["table"] = table(results, sets)
    return doc
