"""``soundvcm bench precision``: how far the lite encoders' features move between fp32 and bf16 (issue 22).

For the first ``clips`` Foley-world test clips (``soundvcm data open``), each clip is decoded once
(the extraction's own ``decode_row``) and encoded twice: every stage in fp32, then every stage under
bf16 autocast (on a CPU without native bf16 that is emulated and slow, but it gives the same
numbers). Reported per feature: the mean and the worst cosine similarity of bf16 to fp32 (per
frame for the visual features, per token for text and sync), and for the vocoder, the log-mel L1 of
each precision's resynthesis of the ground-truth mel against that mel, and between the two. The
mel latent itself is computed in fp32 always (no autocast), so it does not drift.

Whether a model trained on one precision's features keeps its quality on the other's is measured
with ``soundvcm bench quality --precision fp32|bf16`` (same clips, same model; BENCHMARKS.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from soundvcm.bench.quality_sets import load_sets
from soundvcm.data.extract import decode_row
from soundvcm.encoders import encoder_spec, load_encoder_set
from soundvcm.media.mel import MEL_HIFIGAN, mel_spectrogram
from soundvcm.precision import STAGES, PrecisionPlan, resolve_precision


@dataclass
class DriftRow:
    feature: str
    measure: str
    mean: float
    worst: float


def _bf16_everywhere() -> PrecisionPlan:
    """bf16 for every stage, whatever this CPU does natively (the drift, not the speed, is measured)."""
    return PrecisionPlan("bf16", "cpu", {stage: "bf16" for stage in STAGES}, "forced for the drift")


def _cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-row cosine; rows that are zero in both (a still sync token) agree exactly: 1."""
    a, b = a.flatten(0, -2).double(), b.flatten(0, -2).double()
    both_zero = (a.norm(dim=-1) < 1e-12) & (b.norm(dim=-1) < 1e-12)
    return torch.where(both_zero, 1.0, F.cosine_similarity(a, b, dim=-1))


def run_precision_bench(data: Path, encoder_set: str = "lite2", clips: int = 8, duration: float = 4.0, progress=None):
    items = load_sets(Path(data), ("foley",), duration, clips)[0].items
    spec = encoder_spec(encoder_set)
    seq = spec.sequence.with_duration(duration)
    specs = {"clip": spec.clip_frames, "sync": spec.sync_frames}
    plans = {"fp32": resolve_precision("fp32", "cpu"), "bf16": _bf16_everywhere()}
    encoders = load_encoder_set(encoder_set, precision=plans["fp32"])
    found: dict[str, list[torch.Tensor]] = {k: [] for k in ("visual", "text", "sync")}
    mel_l1: dict[str, list[float]] = {"fp32": [], "bf16": [], "between": []}
    for item in items:
        if item.media is None:
            raise ValueError(f"{item.name}: the Foley test set has no video here")
        decoded = decode_row(item.media, seq, specs, True)
        if isinstance(decoded, str):
            raise ValueError(f"{item.media}: {decoded}")
        out = {}
        mel = mel_spectrogram(decoded["wave"][None], MEL_HIFIGAN)  # the latent: fp32 whatever the plan
        for name, plan in plans.items():
            encoders.set_precision(plan)
            out[name] = {
                "visual": encoders.encode_clip(decoded["clip_frames"][None])[0],
                "text": encoders.encode_text([item.caption])[0],
                "sync": encoders.encode_sync(decoded["sync_frames"][None])[0],
                "mel": mel[0],
                "wave_mel": mel_spectrogram(encoders.vocode(mel).clamp(-1, 1), MEL_HIFIGAN)[0],
            }
        for key in found:
            found[key].append(_cosines(out["bf16"][key], out["fp32"][key]))
        gt = out["fp32"]["mel"]
        n = min(gt.shape[-1], out["fp32"]["wave_mel"].shape[-1], out["bf16"]["wave_mel"].shape[-1])
        mel_l1["fp32"].append(float((out["fp32"]["wave_mel"][:, :n] - gt[:, :n]).abs().mean()))
        mel_l1["bf16"].append(float((out["bf16"]["wave_mel"][:, :n] - gt[:, :n]).abs().mean()))
        mel_l1["between"].append(float((out["bf16"]["wave_mel"][:, :n] - out["fp32"]["wave_mel"][:, :n]).abs().mean()))
        if progress is not None:
            progress(item.name)
    rows = []
    for key, values in found.items():
        c = torch.cat(values)
        rows.append(DriftRow(key, "cosine bf16 vs fp32", float(c.mean()), float(c.min())))
    for key, losses in mel_l1.items():
        what = "log-mel L1 between the two" if key == "between" else f"log-mel L1, {key} resynthesis vs the mel"
        rows.append(DriftRow("vocoder", what, sum(losses) / len(losses), max(losses)))
    return rows


def table(rows: list[DriftRow], clips: int) -> str:
    lines = [f"| feature ({clips} clips) | measure | mean | worst |", "|---|---|---|---|"]
    lines += [f"| {r.feature} | {r.measure} | {r.mean:.4f} | {r.worst:.4f} |" for r in rows]
    return "\n".join(lines)
