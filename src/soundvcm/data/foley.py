"""A synthetic Foley world with exact ground truth: objects fall, bounce and sound at known times.

Each clip is a small 2-D box seen from the side. One to three objects, each of a *material* that
its look stands for (shape and colour), fall under gravity, bounce off the floor and the walls with
the material's restitution, and collide with each other (both materials sound). Every contact plays
a one-shot of that material, exactly at the contact time (physics at 1 kHz, contact times
interpolated within the step), as loud as the impact speed. The clip's event list (time, material,
object, speed, surface) is written beside it, so a benchmark can score *which* sound and *when*
exactly, which no public V2A dataset allows.

Outputs per clip ``NAME``: ``NAME.mp4`` (H.264 video + AAC audio), ``NAME.flac`` (the exact,
lossless soundtrack) and ``NAME.events.json``. Everything is a pure function of the clip's seed.

Sounds come from a :class:`SoundBank`. :class:`ModalBank` synthesises one-shots (damped modes per
material plus a contact click: no files, unlimited, reproducible); recorded one-shots (e.g. the
Debian sound libraries in the data recipe) plug in through the same interface."""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from soundvcm.atomic import atomic_write, remove_stale
from soundvcm.media.audio import write_audio
from soundvcm.media.mux import write_mp4


@dataclass(frozen=True)
class Material:
    """How a material looks (shape, RGB colour) and moves (restitution), and its name in captions."""

    name: str
    shape: str  # "square", "circle", "triangle" or "diamond"
    colour: tuple[int, int, int]
    restitution: float
    noun: str


MATERIALS: dict[str, Material] = {
    "wood": Material("wood", "square", (170, 110, 50), 0.55, "wooden block"),
    "metal": Material("metal", "circle", (190, 195, 205), 0.7, "metal ball"),
    "glass": Material("glass", "triangle", (90, 220, 230), 0.6, "glass pyramid"),
    "rubber": Material("rubber", "diamond", (220, 50, 60), 0.8, "rubber toy"),
}


class SoundBank(Protocol):
    """One-shots by material: ``oneshot(material, strength in (0, 1], rng) -> float32 (samples,)``."""

    sample_rate: int

    def oneshot(self, material: str, strength: float, rng: np.random.Generator) -> np.ndarray: ...


# (mode frequency range Hz, number of modes, decay time constant s, click level) per material
MODAL = {
    "wood": ((180.0, 900.0), 4, 0.035, 0.5),
    "metal": ((900.0, 4200.0), 6, 0.45, 0.15),
    "glass": ((2200.0, 6500.0), 5, 0.18, 0.25),
    "rubber": ((60.0, 160.0), 2, 0.09, 0.8),
}


@dataclass
class ModalBank:
    """Modal synthesis: a sum of exponentially damped sinusoids in the material's band, with slightly
    random frequencies per hit, plus a short noise click; peak-normalised, scaled by strength."""

    sample_rate: int = 22_050

    def oneshot(self, material: str, strength: float, rng: np.random.Generator) -> np.ndarray:
        (lo, hi), modes, decay, click = MODAL[material]
        length = int(min(5 * decay + 0.02, 1.5) * self.sample_rate)
        t = np.arange(length) / self.sample_rate
        out = np.zeros(length)
        for k in range(modes):
            f = math.exp(rng.uniform(math.log(lo), math.log(hi)))
            amp = rng.uniform(0.4, 1.0) / (1 + k)
            out += amp * np.exp(-t / (decay * rng.uniform(0.7, 1.3))) * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3))
        n_click = int(0.004 * self.sample_rate)
        noise = rng.standard_normal(n_click) * np.linspace(1, 0, n_click)
        alpha = 1 - math.exp(-2 * math.pi * hi / self.sample_rate)  # one-pole low-pass at the band's top
        for i in range(1, n_click):
            noise[i] = noise[i - 1] + alpha * (noise[i] - noise[i - 1])
        out[:n_click] += click * noise / (np.abs(noise).max() + 1e-9)
        out /= np.abs(out).max() + 1e-9
        return (strength * out).astype(np.float32)


@dataclass
class FoleyConfig:
    """A clip's size and world; defaults fit the lite encoders and ~4 s training clips."""

    duration: float = 4.0
    fps: int = 24
    size: int = 160  # square frame, pixels
    sample_rate: int = 22_050
    max_objects: int = 3
    gravity: float = 9.8  # world units: the box is 1 x 1, so this is a tall drop in ~0.45 s
    radius: float = 0.07
    # slower contacts are silent: an object coming to rest makes micro-bounces tens of ms apart that
    # no onset detector separates (and a 100 ms shift would land on them by chance)
    min_speed: float = 0.8
    materials: tuple[str, ...] = tuple(MATERIALS)
    ambient_db: float | None = -45.0  # a quiet noise bed, so silence is never digital zero


@dataclass
class Event:
    time: float
    material: str
    obj: int
    speed: float
    surface: str


@dataclass
class Scene:
    seed: int
    objects: list[dict] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    track: np.ndarray | None = None  # (frames, objects, 2) positions at each frame time


def simulate(cfg: FoleyConfig, seed: int) -> Scene:
    """Objects, their per-frame positions and every audible contact, from the seed alone."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, cfg.max_objects + 1))
    r = cfg.radius
    objects: list[dict[str, Any]] = []
    for i in range(n):
        material = cfg.materials[int(rng.integers(len(cfg.materials)))]
        pos = np.array([rng.uniform(r, 1 - r), rng.uniform(0.45, 1 - r)])
        vel = np.array([rng.uniform(-0.8, 0.8), rng.uniform(-0.5, 0.5)])
        delay = float(rng.uniform(0.0, cfg.duration * 0.4))  # objects enter the world one after another
        objects.append({"id": i, "material": material, "pos": pos, "vel": vel, "start": delay})
    dt = 1e-3
    steps = int(round(cfg.duration / dt))
    frame_every = 1.0 / cfg.fps
    frames = int(round(cfg.duration * cfg.fps))
    track = np.full((frames, n, 2), np.nan)
    events: list[Event] = []
    next_frame = 0
    for k in range(steps + 1):
        now = k * dt
        while next_frame < frames and next_frame * frame_every <= now + 1e-12:
            for o in objects:
                if now >= o["start"]:
                    track[next_frame, o["id"]] = o["pos"]
            next_frame += 1
        for o in objects:
            if now < o["start"]:
                continue
            o["vel"][1] -= cfg.gravity * dt
            new = o["pos"] + o["vel"] * dt
            e = MATERIALS[o["material"]].restitution
            for axis, wall, surface in ((1, r, "floor"), (0, r, "left wall"), (0, 1 - r, "right wall")):
                crossed = new[axis] < wall if wall == r else new[axis] > wall
                if not crossed:
                    continue
                frac = (wall - o["pos"][axis]) / (new[axis] - o["pos"][axis])  # contact within the step
                speed = abs(float(o["vel"][axis]))
                if speed >= cfg.min_speed and now + frac * dt < cfg.duration:
                    events.append(Event(round(now + frac * dt, 6), o["material"], o["id"], round(speed, 4), surface))
                o["vel"][axis] = -e * o["vel"][axis]
                new[axis] = wall + (wall - new[axis]) * e
            o["pos"] = new
        _collide(objects, now, r, cfg, events)
    events.sort(key=lambda ev: (ev.time, ev.obj))
    plain = [{"id": o["id"], "material": o["material"], "start": o["start"]} for o in objects]
    return Scene(seed, plain, events, track)


def config_from_doc(doc: dict) -> FoleyConfig:
    """The world a clip was made in, from its ``events.json`` document (unknown keys ignored)."""
    known = set(FoleyConfig.__dataclass_fields__)
    fields: dict[str, Any] = {k: tuple(v) if k == "materials" else v for k, v in doc["config"].items() if k in known}
    return FoleyConfig(**fields)


def silent_contacts(doc: dict, duration: float, floor: float = 0.4) -> list[float]:
    """Times of a clip's *silent* contacts: the bounces its physics makes slower than ``min_speed``
    (so without a sound) but at least ``floor`` world units/s (a bounce >= 8 mm high, >= 1.3 px at
    160 px: visible), re-simulated from the seed and config in the clip's ``events.json`` ``doc``.
    A model that sounds them reads the picture's bounces but not the world's loudness rule."""
    cfg = config_from_doc(doc)
    scene = simulate(replace(cfg, min_speed=min(floor, cfg.min_speed)), int(doc["seed"]))
    return sorted({e.time for e in scene.events if floor <= e.speed < cfg.min_speed and e.time < duration})


def _collide(objects: list[dict], now: float, r: float, cfg: FoleyConfig, events: list[Event]) -> None:
    """Object-object contacts: equal masses, an impulse along the line of centres with the lower
    restitution of the two, the overlap resolved; an audible contact sounds *both* materials."""
    live = [o for o in objects if now >= o["start"]]
    for a in range(len(live)):
        for b in range(a + 1, len(live)):
            p, q = live[a], live[b]
            d = q["pos"] - p["pos"]
            dist = float(np.hypot(*d))
            if dist >= 2 * r or dist == 0.0:
                continue
            n = d / dist
            approach = float(np.dot(p["vel"] - q["vel"], n))
            if approach > 0:  # moving towards each other
                e = min(MATERIALS[p["material"]].restitution, MATERIALS[q["material"]].restitution)
                impulse = 0.5 * (1 + e) * approach
                p["vel"] = p["vel"] - impulse * n
                q["vel"] = q["vel"] + impulse * n
                if approach >= cfg.min_speed and now < cfg.duration:
                    for o, other in ((p, q), (q, p)):
                        events.append(
                            Event(round(now, 6), o["material"], o["id"], round(approach, 4), f"object {other['id']}")
                        )
            push = 0.5 * (2 * r - dist) * n  # separate, so one contact is one event
            p["pos"] = p["pos"] - push
            q["pos"] = q["pos"] + push


def mix_events(events: list[Event], bank: SoundBank, total: int, rng: np.random.Generator) -> np.ndarray:
    """Each event's one-shot added at sample round(time * sr), with strength growing with speed."""
    sr = bank.sample_rate
    out = np.zeros(total + sr * 2, dtype=np.float64)
    for ev in events:
        shot = bank.oneshot(ev.material, min(1.0, 0.15 + ev.speed / 5.0), rng)
        at = int(round(ev.time * sr))
        out[at : at + shot.size] += shot
    return out[:total]


def render_audio(cfg: FoleyConfig, scene: Scene, bank: SoundBank) -> np.ndarray:
    """The soundtrack: the events' one-shots at their exact samples, a quiet noise bed, peak <= 0.9."""
    total = int(round(cfg.duration * bank.sample_rate))
    rng = np.random.default_rng(scene.seed + 1)
    out = mix_events(scene.events, bank, total, rng)
    if cfg.ambient_db is not None:
        out += 10 ** (cfg.ambient_db / 20) * rng.standard_normal(total)
    peak = np.abs(out).max()
    return (out * (0.9 / peak if peak > 0.9 else 1.0)).astype(np.float32)


def _mask(shape: str, size: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return (np.abs(dx) <= r * 0.85) & (np.abs(dy) <= r * 0.85)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= r * 1.15
    return (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)  # triangle, apex up


def render_frames(cfg: FoleyConfig, scene: Scene) -> np.ndarray:
    """(frames, size, size, 3) uint8: a floor band, walls, and each object drawn in its material's look."""
    if scene.track is None:
        raise ValueError("the scene has no object track (simulate it first)")
    track = scene.track
    s = cfg.size
    base = np.full((s, s, 3), 38, np.uint8)
    floor = int(round((1 - cfg.radius * 0.6) * s))
    base[floor:] = (70, 62, 55)
    frames = np.repeat(base[None], track.shape[0], axis=0)
    for f in range(track.shape[0]):
        for obj in scene.objects:
            x, y = track[f, obj["id"]]
            if np.isnan(x):
                continue
            m = MATERIALS[obj["material"]]
            mask = _mask(m.shape, s, x * s, (1 - y) * s, cfg.radius * s)
            frames[f][mask] = m.colour
    return frames


def caption(scene: Scene) -> str:
    nouns = [MATERIALS[o["material"]].noun for o in scene.objects]
    return ("a " + ", a ".join(nouns) + (" bounces" if len(nouns) == 1 else " bounce")).replace(", a ", " and a ", 1)


def write_clip(path_stem: Path, cfg: FoleyConfig, scene: Scene, bank: SoundBank) -> dict:
    """Write NAME.mp4, NAME.flac and NAME.events.json (each atomically); returns the events document."""
    audio = render_audio(cfg, scene, bank)
    frames = render_frames(cfg, scene)
    sr = bank.sample_rate

    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "seed": scene.seed,
        "caption": caption(scene),
        "duration": cfg.duration,
        "fps": cfg.fps,
        "sample_rate": sr,
        "objects": scene.objects,
        "events": [asdict(e) for e in scene.events],
        "config": asdict(cfg),
    }
    write_mp4(stem.with_suffix(".mp4"), frames, cfg.fps, audio, sr)
    write_audio(stem.with_suffix(".flac"), audio, sr)
    atomic_write(stem.parent / f"{stem.name}.events.json", lambda tmp: tmp.write_text(json.dumps(doc, indent=1)))
    return doc


def clip_seed(split: str, index: int, base_seed: int = 0) -> int:
    """Disjoint, reproducible seeds per (split, index)."""
    return zlib.crc32(f"foley:{base_seed}:{split}:{index}".encode()) & 0x7FFFFFFF


def _write_seeded(stems: list[Path], cfg: FoleyConfig, bank, split: str, base_seed: int, index: int) -> dict:
    return write_clip(stems[index], cfg, simulate(cfg, clip_seed(split, index, base_seed)), bank)


def make_split(
    out: Path,
    split: str,
    count: int,
    cfg: FoleyConfig | None = None,
    bank=None,
    base_seed: int = 0,
    progress=None,
    jobs: int = 1,
):
    """``count`` clips in ``out/split/`` plus ``out/split.tsv`` (path<TAB>caption); finished clips are
    skipped, so a rerun resumes; ``jobs`` processes render the rest (the same files for any number:
    :mod:`soundvcm.data.render_pool`). Returns the manifest path."""
    from soundvcm.data.render_pool import render_split

    cfg = cfg or FoleyConfig()
    bank = bank or ModalBank(cfg.sample_rate)
    remove_stale(Path(out) / split)  # what a killed run was writing
    stems = [Path(out) / split / f"foley_{split}_{i:05d}" for i in range(count)]
    docs = render_split(stems, partial(_write_seeded, stems, cfg, bank, split, base_seed), jobs, progress)
    rows = [f"{split}/{stem.name}.mp4\t{doc['caption']}" for stem, doc in zip(stems, docs)]
    manifest = Path(out) / f"{split}.tsv"
    atomic_write(manifest, lambda tmp: tmp.write_text("path\tcaption\n" + "\n".join(rows) + "\n"))
    return manifest
