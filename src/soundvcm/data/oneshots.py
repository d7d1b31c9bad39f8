"""Recorded one-shots for the Foley world, from Debian's ``hydrogen-drumkits`` (GPL-2+).

Each material of :data:`soundvcm.data.foley.MATERIALS` maps to recorded instruments with velocity
layers (Softest ... Hard): wood = woodblocks, claves, sticks and rim clicks; metal = cowbells;
glass = struck water glasses; rubber = cajon thumps and low bongos (a soft, dull thud); the
directed world's other voices (:data:`PALETTE`) are kick, snare, closed hi-hat, hand clap, finger
snap, maraca, tambourine and high bongo. Ride and
cymbal bells and toms were left out: their long, beating decays make an onset detector fire again
and again within one hit (measured: up to 15 onsets per ride-bell hit). Impact strength picks the
velocity layer (louder hits sound different, not just louder) and scales the gain.

Every sample is trimmed so that its onset is sample 0 (the first sample above 5 % of its peak,
minus 1 ms), resampled to the world's rate with soxr, faded out over its last 20 ms and cut at 1 s,
so an event's time in ``events.json`` is exactly where its sound starts."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from soundvcm.media.audio import resample

KITS = "usr/share/hydrogen/data/drumkits"
# material -> (kit folder, file-name regex whose group 1 names the instrument)
RECORDED: dict[str, tuple[tuple[str, str], ...]] = {
    "wood": (
        ("Gimme A Hand 1.0", r"(WoodBlock|Clave)-\w+\.wav"),
        ("ForzeeStereo", r"(Stick|RimClick)-\d\.wav"),
    ),
    "metal": (
        ("Gimme A Hand 1.0", r"(Cowbell)-\w+\.wav"),
        ("The Black Pearl 1.0", r"(Cowbell)-\w+\.wav"),
    ),
    "glass": (("Gimme A Hand 1.0", r"(WaterglassHi|WaterglassLo)-\w+\.wav"),),
    "rubber": (("Gimme A Hand 1.0", r"(CajonThumps|BongoLo)-\w+\.wav"),),
}
# the directed Foley world's other voices (soundvcm.data.directed): short hits of other instruments
PALETTE: dict[str, tuple[tuple[str, str], ...]] = {
    "kick": (("ForzeeStereo", r"(Kick)-\d\.wav"),),
    "snare": (("ForzeeStereo", r"(Snare)-\d\.wav"),),
    "hihat": (("ForzeeStereo", r"(HiHatClosed)-\d\.wav"),),
    "clap": (("Gimme A Hand 1.0", r"(HandClap)-\w+\.wav"),),
    "snap": (("Gimme A Hand 1.0", r"(Fingersnap)-\w+\.wav"),),
    "maraca": (("Gimme A Hand 1.0", r"(Maraca)-\w+\.wav"),),
    "tambourine": (("Gimme A Hand 1.0", r"(Tambourine)-\w+\.wav"),),
    "bongo": (("Gimme A Hand 1.0", r"(BongoHi)-\w+\.wav"),),
}
VOICES = {**RECORDED, **PALETTE}
LAYERS = {"Softest": 0, "Soft": 1, "Med": 2, "Hard": 3, "Hardest": 4}
MAX_SECONDS = 1.0


def wanted(path: str) -> bool:
    """Whether a path of the hydrogen-drumkits package holds a one-shot the bank uses."""
    if not path.startswith(KITS + "/"):
        return False
    kit, _, name = path[len(KITS) + 1 :].partition("/")
    return any(kit == k and re.fullmatch(p, name) for spec in VOICES.values() for k, p in spec)


def _layer(name: str) -> int:
    tail = Path(name).stem.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else LAYERS.get(tail, 2)


def prepare_shot(wave: np.ndarray, sr: int, target_sr: int) -> np.ndarray:
    """Mono, onset at sample 0, ``target_sr``, at most :data:`MAX_SECONDS`, faded out, peak 1."""
    if wave.ndim > 1:
        wave = wave.mean(axis=1)
    peak = np.abs(wave).max()
    if peak <= 0:
        raise ValueError("silent one-shot")
    start = max(0, int(np.argmax(np.abs(wave) > 0.05 * peak)) - int(0.001 * sr))
    wave = wave[start : start + int(MAX_SECONDS * sr)]
    out = resample(wave.astype(np.float32), sr, target_sr).numpy().astype(np.float64)
    fade = min(out.size, int(0.02 * target_sr))
    out[out.size - fade :] *= np.linspace(1, 0, fade)
    return (out / np.abs(out).max()).astype(np.float32)


@dataclass
class RecordedBank:
    """A :class:`~soundvcm.data.foley.SoundBank` of recorded one-shots: per material, instruments
    with velocity layers; ``strength`` in (0, 1] picks the layer and scales the gain."""

    root: Path  # folder the package was unpacked into (holds usr/share/hydrogen/...)
    sample_rate: int = 22_050
    shots: dict[str, list[list[np.ndarray]]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        for material, spec in VOICES.items():
            instruments: dict[tuple[str, str], list[tuple[int, np.ndarray]]] = {}
            for kit, pattern in spec:
                folder = self.root / KITS / kit
                if not folder.is_dir():
                    if material in PALETTE:  # the directed world's extra voices: used where unpacked
                        continue
                    raise FileNotFoundError(
                        f"{folder} is missing: run `soundvcm data open OUT` (it unpacks hydrogen-drumkits)"
                    )
                for path in sorted(folder.iterdir()):
                    match = re.fullmatch(pattern, path.name)
                    if match:
                        wave, sr = sf.read(path, dtype="float32", always_2d=False)
                        shot = prepare_shot(wave, sr, self.sample_rate)
                        instruments.setdefault((kit, match.group(1)), []).append((_layer(path.name), shot))
            if not instruments and material in PALETTE:
                continue
            if not instruments:
                raise FileNotFoundError(f"no one-shots for {material} under {self.root / KITS}")
            self.shots[material] = [
                [s for _, s in sorted(layers, key=lambda x: x[0])] for layers in instruments.values()
            ]

    def oneshot(self, material: str, strength: float, rng: np.random.Generator) -> np.ndarray:
        instruments = self.shots[material]
        layers = instruments[int(rng.integers(len(instruments)))]
        index = min(len(layers) - 1, int(strength * len(layers)))
        return (strength * layers[index]).astype(np.float32)

    def counts(self) -> dict[str, int]:
        return {m: sum(len(layers) for layers in inst) for m, inst in self.shots.items()}
