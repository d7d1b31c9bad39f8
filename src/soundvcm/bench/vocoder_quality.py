"""``soundvcm bench vocoder --data``: how far each vocoder's resynthesis is from the true mel (issue 35).

For the first ``clips`` test clips of each set (Foley world, SFX, Big Buck Bunny; ``soundvcm data
open``), the ground truth's 80-band log-mel (HiFi-GAN's) is vocoded by each vocoder in fp32 and
the log-mel of the result compared, frame by frame, with the mel it came from (L1, natural log),
and with HiFi-GAN V1's resynthesis (the teacher every student was distilled from). Issue 35's bar
for a lighter vocoder: an L1 to the true mel no worse than HiFi-GAN V1's + 0.03, beside
``bench quality --ceiling-vocoder``'s FD and onset F1 within 10 % of V1's.

fp32 throughout: the measure is the vocoder's, not the precision's (``bench precision`` has that).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from soundvcm.bench.quality_sets import load_sets
from soundvcm.media.audio import load_audio
from soundvcm.media.mel import MEL_HIFIGAN, mel_spectrogram

SAMPLE_RATE = 22_050
SETS = ("foley", "sfx", "bbb")


@dataclass
class VocoderQuality:
    vocoder: str
    test_set: str
    clips: int
    to_mel: float  # mean log-mel L1 of the resynthesis to the true mel
    to_teacher: float  # ... to HiFi-GAN V1's resynthesis


def _l1(a: torch.Tensor, b: torch.Tensor) -> float:
    n = min(a.shape[-1], b.shape[-1])
    return float((a[..., :n] - b[..., :n]).abs().mean())


@torch.inference_mode()
def run(
    data: Path,
    vocoders: tuple[str, ...],
    clips: int = 20,
    duration: float = 8.0,
    sets: tuple[str, ...] = SETS,
    progress=None,
) -> list[VocoderQuality]:
    """One row per (vocoder, set); ``hifigan`` (the teacher) is always measured first."""
    from soundvcm.encoders.lite import load_vocoder

    names = ("hifigan", *(v for v in vocoders if v != "hifigan"))
    models = {v: load_vocoder(v, "lite2", True)[0].eval() for v in names}
    rows = []
    for ts in load_sets(Path(data), sets, duration, clips):
        sums = {v: [0.0, 0.0] for v in names}
        for item in ts.items:
            wave, _ = load_audio(item.gt, SAMPLE_RATE, duration=duration)
            mel = mel_spectrogram(wave[None].float(), MEL_HIFIGAN)
            resyn = {v: mel_spectrogram(m(mel).float().clamp(-1, 1), MEL_HIFIGAN) for v, m in models.items()}
            for v in names:
                sums[v][0] += _l1(resyn[v], mel)
                sums[v][1] += _l1(resyn[v], resyn["hifigan"])
            if progress is not None:
                progress(1)
        n = max(1, len(ts.items))
        rows += [VocoderQuality(v, ts.name, len(ts.items), s[0] / n, s[1] / n) for v, s in sums.items()]
    return rows


def table(rows: list[VocoderQuality]) -> str:
    lines = [
        "| vocoder | set | clips | log-mel L1 to the true mel | vs HiFi-GAN V1 | log-mel L1 to V1's resynthesis |",
        "|---|---|---|---|---|---|",
    ]
    teacher = {r.test_set: r.to_mel for r in rows if r.vocoder == "hifigan"}
    for r in rows:
        delta = r.to_mel - teacher[r.test_set]
        lines.append(f"| {r.vocoder} | {r.test_set} | {r.clips} | {r.to_mel:.4f} | {delta:+.4f} | {r.to_teacher:.4f} |")
    return "\n".join(lines)
