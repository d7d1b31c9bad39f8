"""The directed Foley world (issue 33): the picture places each sound, the caption chooses it.

The Foley world of :mod:`soundvcm.data.foley` always sounds what the picture shows and captions it
by the same materials, so a model learns nothing from the text. Here the *times* still come from
the picture (the same physics, the same event list) but the *voice* of each object is chosen per
clip, and the caption always names what is heard:

* ``match`` (half the clips): each object sounds its own material, captioned in varied words;
  some captions name only part of the scene, and some are empty (then the picture alone must
  choose the sound, as in a clip with no prompt);
* ``swap``: each object sounds *another* material than it shows (a wooden block that rings like
  metal), and the caption names the heard materials;
* ``palette``: each object sounds an instrument from the recorded kits beyond the four materials
  (kick, snare, hand clap, hi-hat, ...), named in the caption.

Pictures are nearer real footage: most clips put the box over a frame of the film's *training*
part (never its test part), many move the camera (a slow pan and a little shake, the whole scene
moving together), and lighting drifts and sensor noise is added, so the sync feature must find
impacts in local motion rather than in any motion at all.

Every clip is a pure function of its seed, the voice bank and the backdrop pool. Outputs per clip
are the Foley world's (``NAME.mp4``, ``NAME.flac``, ``NAME.events.json``); the events document also
records the mode, each object's voice and the picture's materials."""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np

from soundvcm.atomic import atomic_write, remove_stale
from soundvcm.data import foley
from soundvcm.media.audio import write_audio
from soundvcm.media.mux import write_mp4

MATERIALS = tuple(foley.MATERIALS)

# how a voice is named in captions: (nouns, sound words); materials first, then the palette
VOICE_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "wood": (("a wooden block", "a block of wood", "a wood block", "a wooden cube"), ("knocks", "clacks", "bounces")),
    "metal": (("a metal ball", "a steel ball", "a metal sphere", "an iron ball"), ("clanks", "clangs", "rings")),
    "glass": (("a glass pyramid", "a glass", "a piece of glass", "a crystal"), ("clinks", "chimes", "tinkles")),
    "rubber": (("a rubber toy", "a rubber ball", "a rubber block", "a squishy toy"), ("thuds", "bumps", "bounces")),
    "kick": (("a kick drum", "a bass drum"), ("booms", "thumps")),
    "snare": (("a snare drum", "a snare"), ("cracks", "snaps")),
    "hihat": (("a closed hi-hat", "a hi-hat"), ("ticks", "chicks")),
    "clap": (("a hand clap", "clapping hands"), ("claps", "smacks")),
    "snap": (("a finger snap", "snapping fingers"), ("snaps", "clicks")),
    "maraca": (("a maraca", "a shaker"), ("rattles", "shakes")),
    "tambourine": (("a tambourine",), ("jingles", "rattles")),
    "bongo": (("a bongo", "a hand drum"), ("pops", "taps")),
}
PALETTE = tuple(v for v in VOICE_WORDS if v not in MATERIALS)
# "the sound of X" forms, so a caption is not always "<noun> <verb>"
PLAIN = {"wood": "wood knocking", "metal": "metallic clanks", "glass": "glass clinking", "rubber": "dull rubber thuds"}


@dataclass(frozen=True)
class DirectedConfig:
    """Shares of each kind of clip (see the module docstring); the rest is the Foley world's."""

    world: foley.FoleyConfig = field(default_factory=foley.FoleyConfig)
    swap: float = 0.3
    palette: float = 0.2  # match = 1 - swap - palette
    empty_caption: float = 0.2  # of match clips
    partial_caption: float = 0.3  # of match clips with several voices
    backdrop: float = 0.7  # clips over a film frame (else the plain box)
    camera: float = 0.5  # clips with a moving camera
    max_noise: float = 8.0  # sensor noise std, 0-255 scale (uniform from 0)
    lighting: float = 0.25  # brightness drifts by up to +-this over a clip


def choose_voices(materials: list[str], mode: str, rng: np.random.Generator) -> list[str]:
    """Each object's voice: its material (match), another material (swap), or a palette instrument."""
    if mode == "match":
        return list(materials)
    if mode == "swap":
        return [str(rng.choice([m for m in MATERIALS if m != own])) for own in materials]
    return [str(rng.choice(PALETTE)) for _ in materials]


def describe(voices: list[str], rng: np.random.Generator, partial: bool = False) -> str:
    """A caption naming the distinct voices (all of them, or one if ``partial``), in varied words."""
    distinct = list(dict.fromkeys(voices))
    if partial and len(distinct) > 1:
        distinct = [distinct[int(rng.integers(len(distinct)))]]
    parts = []
    for v in distinct:
        nouns, verbs = VOICE_WORDS[v]
        if v in PLAIN and rng.random() < 0.25:
            parts.append(PLAIN[v])
        else:
            parts.append(f"{rng.choice(nouns)} {rng.choice(verbs)}")
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


# ----- pictures ---------------------------------------------------------------------------------
@dataclass
class Look:
    """How a clip is filmed: backdrop (H, W, 3) uint8 or None, camera path, lighting, noise."""

    backdrop: np.ndarray | None
    pan: tuple[float, float]  # pixels per second
    shake: float  # pixels
    light: tuple[float, float]  # brightness at the start and the end (x)
    noise: float


def choose_look(cfg: DirectedConfig, rng: np.random.Generator, backdrops: list[np.ndarray]) -> Look:
    backdrop = backdrops[int(rng.integers(len(backdrops)))] if backdrops and rng.random() < cfg.backdrop else None
    moving = rng.random() < cfg.camera
    pan = (float(rng.uniform(-6, 6)), float(rng.uniform(-3, 3))) if moving else (0.0, 0.0)
    shake = float(rng.uniform(0.0, 1.5)) if moving else 0.0
    lo, hi = 1 - cfg.lighting, 1 + cfg.lighting
    light = (float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi)))
    return Look(backdrop, pan, shake, light, float(rng.uniform(0, cfg.max_noise)))


MARGIN = 24  # pixels of canvas around the view, room for the camera to move


def render_frames(cfg: foley.FoleyConfig, scene: foley.Scene, look: Look, seed: int) -> np.ndarray:
    """(frames, size, size, 3) uint8: the Foley box drawn over the backdrop on a larger canvas, seen
    through a camera window that pans and shakes, with drifting light and sensor noise."""
    plain = foley.render_frames(cfg, scene)  # the world as the plain renderer draws it
    if look.backdrop is None and look.pan == (0.0, 0.0) and look.shake == 0.0:
        frames = plain.astype(np.float32)
    else:
        frames = _filmed(cfg, scene, plain, look, seed)
    n = frames.shape[0]
    gain = np.linspace(look.light[0], look.light[1], n, dtype=np.float32)[:, None, None, None]
    rng = np.random.default_rng(seed + 7)
    frames = frames * gain + rng.normal(0.0, look.noise, frames.shape).astype(np.float32)
    return np.clip(frames, 0, 255).astype(np.uint8)


def _filmed(cfg: foley.FoleyConfig, scene: foley.Scene, plain: np.ndarray, look: Look, seed: int) -> np.ndarray:
    s, n = cfg.size, plain.shape[0]
    big = s + 2 * MARGIN
    if look.backdrop is not None:
        canvas = _fit(look.backdrop, big).astype(np.float32)
    else:
        canvas = np.full((big, big, 3), 38.0, np.float32)
    floor = int(round((1 - cfg.radius * 0.6) * s)) + MARGIN
    canvas[floor:] = 0.5 * canvas[floor:] + 0.5 * np.array([70, 62, 55], np.float32)  # the floor stays visible
    # objects: where the plain rendering differs from its own empty box, over the canvas
    empty = foley.render_frames(cfg, replace(scene, objects=[]))[0]
    rng = np.random.default_rng(seed + 11)
    shake = rng.normal(0.0, look.shake, (n, 2)) if look.shake else np.zeros((n, 2))
    out = np.empty((n, s, s, 3), np.float32)
    for f in range(n):
        frame = canvas.copy()
        mask = np.any(plain[f] != empty, axis=-1)
        frame[MARGIN : MARGIN + s, MARGIN : MARGIN + s][mask] = plain[f][mask]
        t = f / cfg.fps
        dx = int(round(np.clip(look.pan[0] * t + shake[f, 0], -MARGIN, MARGIN)))
        dy = int(round(np.clip(look.pan[1] * t + shake[f, 1], -MARGIN, MARGIN)))
        out[f] = frame[MARGIN + dy : MARGIN + dy + s, MARGIN + dx : MARGIN + dx + s]
    return out


def _fit(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize (nearest) to ``size`` x ``size``."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = image[top : top + side, left : left + side]
    idx = (np.arange(size) * side / size).astype(int)
    return square[idx][:, idx]


def film_backdrops(videos: list[Path], count: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` frames picked at random times from ``videos`` (the film's *training* windows)."""
    import av

    rng = np.random.default_rng(seed)
    frames = []
    for i in range(count):
        path = videos[int(rng.integers(len(videos)))]
        with av.open(str(path)) as c:
            stream = c.streams.video[0]
            wanted = int(rng.integers(0, 90))
            for k, frame in enumerate(c.decode(stream)):
                if k == wanted:
                    frames.append(frame.to_ndarray(format="rgb24"))
                    break
        if len(frames) < i + 1:  # a short window: its first frame
            with av.open(str(path)) as c:
                frames.append(next(c.decode(video=0)).to_ndarray(format="rgb24"))
    return frames


# ----- clips ------------------------------------------------------------------------------------
def make_clip(stem: Path, cfg: DirectedConfig, seed: int, bank, backdrops: list[np.ndarray]) -> dict:
    """Write one directed clip (NAME.mp4, NAME.flac, NAME.events.json); returns its events document."""
    rng = np.random.default_rng(seed + 3)
    scene = foley.simulate(cfg.world, seed)
    pictured = [o["material"] for o in scene.objects]
    u = rng.random()
    mode = "swap" if u < cfg.swap else "palette" if u < cfg.swap + cfg.palette else "match"
    voices = choose_voices(pictured, mode, rng)
    if mode == "match" and rng.random() < cfg.empty_caption:
        text = ""
    else:
        text = describe(voices, rng, partial=mode == "match" and rng.random() < cfg.partial_caption)
    voiced = replace(scene, events=[replace(e, material=voices[e.obj]) for e in scene.events])
    audio = foley.render_audio(cfg.world, voiced, bank)
    frames = render_frames(cfg.world, scene, choose_look(cfg, rng, backdrops), seed)
    doc = {
        "seed": seed,
        "caption": text,
        "mode": mode,
        "pictured": pictured,
        "voices": voices,
        "duration": cfg.world.duration,
        "fps": cfg.world.fps,
        "sample_rate": bank.sample_rate,
        "objects": scene.objects,
        "events": [asdict(e) for e in voiced.events],
        "config": asdict(cfg.world),
    }
    stem.parent.mkdir(parents=True, exist_ok=True)
    write_mp4(stem.with_suffix(".mp4"), frames, cfg.world.fps, audio, bank.sample_rate)
    write_audio(stem.with_suffix(".flac"), audio, bank.sample_rate)
    atomic_write(stem.parent / f"{stem.name}.events.json", lambda tmp: tmp.write_text(json.dumps(doc, indent=1)))
    return doc


def clip_seed(split: str, index: int, base_seed: int = 0) -> int:
    """Disjoint from the Foley world's seeds (another prefix), reproducible per (split, index)."""
    return zlib.crc32(f"directed:{base_seed}:{split}:{index}".encode()) & 0x7FFFFFFF


def _make_seeded(
    stems: list[Path], cfg: DirectedConfig, split: str, base_seed: int, bank, backdrops, index: int
) -> dict:
    return make_clip(stems[index], cfg, clip_seed(split, index, base_seed), bank, backdrops)


def make_split(
    out: Path, split: str, count: int, bank, backdrops: list[np.ndarray], cfg: DirectedConfig | None = None,
    base_seed: int = 0, progress=None, jobs: int = 1,
) -> Path:  # fmt: skip
    """``count`` clips in ``out/split/`` and ``out/split.tsv``; finished clips are skipped (resumable);
    ``jobs`` processes render the rest (the same files for any number)."""
    from soundvcm.data.render_pool import render_split

    cfg = cfg or DirectedConfig()
    remove_stale(Path(out) / split)
    stems = [Path(out) / split / f"directed_{split}_{i:05d}" for i in range(count)]
    render = partial(_make_seeded, stems, cfg, split, base_seed, bank, backdrops)
    docs = render_split(stems, render, jobs, progress)
    rows = [f"{split}/{stem.name}.mp4\t{doc['caption']}" for stem, doc in zip(stems, docs)]
    manifest = Path(out) / f"{split}.tsv"
    atomic_write(manifest, lambda tmp: tmp.write_text("path\tcaption\n" + "\n".join(rows) + "\n"))
    return manifest


def mode_shares(docs: list[dict]) -> dict[str, float]:
    """The share of each mode (and of empty captions) in a set of events documents."""
    n = max(1, len(docs))
    shares = {m: sum(d["mode"] == m for d in docs) / n for m in ("match", "swap", "palette")}
    shares["empty caption"] = sum(not d["caption"] for d in docs) / n
    return {k: round(v, 3) for k, v in shares.items() if not math.isnan(v)}
