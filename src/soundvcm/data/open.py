"""``soundvcm data open OUT``: the open training and test data, rebuilt from nothing by one command.

Three parts, each with TSV manifests (``path<TAB>caption``, paths relative to the manifest) and
fixed train/val/test splits:

* ``foley/``: the synthetic Foley world (:mod:`soundvcm.data.foley`) voiced with *recorded*
  one-shots from Debian's hydrogen-drumkits (:mod:`soundvcm.data.oneshots`); exact event lists.
* ``bbb/``: Big Buck Bunny (CC-BY 3.0, from moviepy 2.2.1's source distribution) cut into
  windows; split by time (train = first 75 %, val = next 10 %, test = the last 15 % of the
  story), one window left out at each boundary so that no shot straddles two splits. The end
  credits (490 s to 596 s: text over music, nothing to hear that is seen) are left out: split
  over the whole film, the test set would have been credits only.
* ``sfx/``: sound-effect libraries as text-audio pairs (Scratch, Tux Paint stamps, Wesnoth,
  LinCity-NG, Hydrogen drum kits, LMMS); captions from file names, folders and Tux Paint's
  ``.txt`` files; ~15 % of every class held out for test (by a hash of the path, so stable).

Downloads are pinned by URL, size and SHA-256 (:mod:`soundvcm.data.sources`) and kept in
``OUT/downloads``; every output is written atomically and skipped when present, so a rerun
resumes. ``OUT/ATTRIBUTION.md`` lists each source and its licence.
"""

from __future__ import annotations

import json
import re
import sys
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from soundvcm.atomic import atomic_write, remove_stale
from soundvcm.data import foley
from soundvcm.data.oneshots import RecordedBank, wanted
from soundvcm.data.sources import SOURCES, Source, attribution, extract_deb, extract_tar_member, fetch
from soundvcm.media.audio import load_audio, write_audio
from soundvcm.media.mux import write_mp4

PARTS = ("foley", "bbb", "sfx", "directed")
DEFAULT_PARTS = PARTS


@dataclass(frozen=True)
class OpenConfig:
    duration: float = 4.0
    foley_train: int = 2000
    foley_val: int = 64
    foley_test: int = 300
    directed_train: int = 3000
    directed_val: int = 64
    directed_test: int = 200
    seed: int = 0
    bbb_width: int = 320  # windows are re-encoded small: the encoders see 224 px and 64 px frames
    bbb_height: int = 180
    sfx_sample_rate: int = 22_050
    sfx_test_fraction: float = 0.15
    jobs: int = 1  # processes rendering the Foley worlds' clips (the same files for any number)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _write_manifest(path: Path, rows: list[tuple[str, str]]) -> Path:
    body = "path\tcaption\n" + "".join(f"{p}\t{c}\n" for p, c in rows)
    return atomic_write(path, lambda tmp: tmp.write_text(body))


# -- Foley world ---------------------------------------------------------------------------------


def build_foley(out: Path, sources: Path, cfg: OpenConfig, progress: Callable | None = None) -> list[Path]:
    deb = fetch(SOURCES["hydrogen-drumkits"], out / "downloads")
    extract_deb(deb, sources / "hydrogen-drumkits", wanted)
    bank = RecordedBank(sources / "hydrogen-drumkits")
    world = foley.FoleyConfig(duration=cfg.duration)
    manifests = []
    for split, count in (("train", cfg.foley_train), ("val", cfg.foley_val), ("test", cfg.foley_test)):
        if count:
            bar = progress(count, f"foley {split}") if progress else None
            update = bar.update if bar else None
            manifests.append(foley.make_split(out / "foley", split, count, world, bank, cfg.seed, update, cfg.jobs))
            if bar:
                bar.close()
    return manifests


def build_directed(out: Path, sources: Path, cfg: OpenConfig, progress: Callable | None = None) -> list[Path]:
    """The directed Foley world (:mod:`soundvcm.data.directed`) over frames of the film's training part."""
    from soundvcm.data import directed

    deb = fetch(SOURCES["hydrogen-drumkits"], out / "downloads")
    extract_deb(deb, sources / "hydrogen-drumkits", wanted)
    bank = RecordedBank(sources / "hydrogen-drumkits")
    train_windows = sorted((out / "bbb" / "train").glob("*.mp4")) or sorted(
        p.with_suffix(".mp4") for p in _bbb_train_stems(out, sources, cfg)
    )
    backdrops = directed.film_backdrops(train_windows, 64, seed=cfg.seed)
    world = directed.DirectedConfig(world=foley.FoleyConfig(duration=cfg.duration))
    manifests = []
    counts = (("train", cfg.directed_train), ("val", cfg.directed_val), ("test", cfg.directed_test))
    for split, count in counts:
        if count:
            bar = progress(count, f"directed {split}") if progress else None
            update = bar.update if bar else None
            args = (out / "directed", split, count, bank, backdrops, world, cfg.seed, update, cfg.jobs)
            manifests.append(directed.make_split(*args))
            if bar:
                bar.close()
    return manifests


def _bbb_train_stems(out: Path, sources: Path, cfg: OpenConfig) -> list[Path]:
    """The film's training windows, built first when the directed world is asked for on its own."""
    build_bbb(out, sources, cfg)
    return sorted((out / "bbb" / "train").glob("*.mp4"))


# -- Big Buck Bunny ------------------------------------------------------------------------------

BBB_SPLITS = (("train", 0.0, 0.75), ("val", 0.75, 0.85), ("test", 0.85, 1.0))
BBB_STORY_END = 490.0  # the picture fades to black at 489.75 s; the end credits follow
BBB_CAPTION = "a scene of the animated film Big Buck Bunny"


def bbb_windows(film_seconds: float, duration: float) -> list[tuple[str, int, float]]:
    """(split, index, start) of every window of the first ``film_seconds``: split by time, no window
    crossing a split boundary, and the first window after each boundary dropped (a gap)."""
    rows = []
    for split, lo, hi in BBB_SPLITS:
        start = lo * film_seconds + (duration if lo > 0 else 0.0)
        k = 0
        while start + duration <= hi * film_seconds + 1e-9:
            rows.append((split, k, round(start, 3)))
            start += duration
            k += 1
    return rows


def _film(out: Path, sources: Path) -> Path:
    sdist = fetch(SOURCES["moviepy-sdist"], out / "downloads")
    zipped = extract_tar_member(sdist, "moviepy_10_minutes.zip", sources / "moviepy" / "moviepy_10_minutes.zip")
    film = sources / "moviepy" / "bbb.mp4"
    if not film.is_file():
        with zipfile.ZipFile(zipped) as z:
            name = next((n for n in z.namelist() if n.endswith("resources/bbb.mp4")), None)
            if name is None:
                raise FileNotFoundError(f"{zipped} has no resources/bbb.mp4")
            atomic_write(film, lambda tmp: tmp.write_bytes(z.read(name)))
    return film


def build_bbb(out: Path, sources: Path, cfg: OpenConfig, progress: Callable | None = None) -> list[Path]:
    film = _film(out, sources)
    with av.open(str(film)) as c:
        stream = c.streams.video[0]
        seconds = float(stream.duration * stream.time_base) if stream.duration else float(c.duration / 1e6)
        fps = float(stream.average_rate)
    windows = bbb_windows(min(seconds, BBB_STORY_END), cfg.duration)
    stems = {w: out / "bbb" / w[0] / f"bbb_{w[0]}_{w[1]:03d}" for w in windows}
    todo = [
        w for w in windows if not (stems[w].with_suffix(".mp4").is_file() and stems[w].with_suffix(".flac").is_file())
    ]
    if todo:
        film_audio, sr = load_audio(film, 44_100)
        wave = film_audio.numpy()
        by_start = {round(w[2] * fps): w for w in todo}  # first frame index of each window
        frames_per = round(cfg.duration * fps)
        bar = progress(len(todo), "bbb windows") if progress else None
        current: tuple | None = None
        frames: list[np.ndarray] = []
        with av.open(str(film)) as c:
            stream = c.streams.video[0]
            stream.thread_type = "AUTO"
            scaler = VideoReformatter()  # one swscale context for the film, not one per frame
            for index, frame in enumerate(c.decode(stream)):
                if current is None and index in by_start:
                    current, frames = by_start[index], []
                if current is None:
                    continue
                img = scaler.reformat(frame, width=cfg.bbb_width, height=cfg.bbb_height, format="rgb24").to_ndarray()
                frames.append(img)
                if len(frames) == frames_per:
                    a = int(round(current[2] * sr))
                    audio = wave[a : a + int(round(cfg.duration * sr))]
                    stem = stems[current]
                    stem.parent.mkdir(parents=True, exist_ok=True)
                    write_mp4(stem.with_suffix(".mp4"), np.stack(frames), fps, audio, sr)
                    write_audio(stem.with_suffix(".flac"), audio, sr)
                    current = None
                    if bar:
                        bar.update(1)
        if bar:
            bar.close()
    manifests = []
    for split, _, _ in BBB_SPLITS:
        rows = [(f"{split}/{stems[w].name}.mp4", BBB_CAPTION) for w in windows if w[0] == split]
        manifests.append(_write_manifest(out / "bbb" / f"{split}.tsv", rows))
    return manifests


# -- sound-effect libraries ----------------------------------------------------------------------

AUDIO = (".wav", ".ogg", ".mp3", ".flac", ".aif", ".aiff")


def words(name: str) -> str:
    """A caption from a file or folder name: CamelCase, digits, '-' and '_' become plain words."""
    name = re.sub(r"[-_.]+", " ", name)
    name = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name)
    name = re.sub(r"\d+", " ", name)
    return re.sub(r"\s+", " ", name).strip().lower()


@dataclass(frozen=True)
class Library:
    """Where a library's sound effects sit in its package, and how each gets a class and caption."""

    source: str
    prefix: str
    keep: Callable[[str], bool]
    label: Callable[[Path, Path], tuple[str, str]]  # (root, file) -> (class, caption)

    def wanted(self, path: str) -> bool:
        """Package members to unpack: the library's folder, filtered by ``keep``."""
        return path.startswith(self.prefix) and self.keep(path)


def _tux_keep(path: str) -> bool:
    return path.endswith(".ogg") and "_desc" not in path


def _tux_label(root: Path, f: Path) -> tuple[str, str]:
    txt = f.with_suffix(".txt")
    first = txt.read_text(errors="ignore").splitlines()[0].strip().rstrip(".") if txt.is_file() else words(f.stem)
    return f.parent.name, f"the sound of {first[0].lower() + first[1:] if first else words(f.stem)}"


def _tux_extract_keep(path: str) -> bool:
    return path.startswith("usr/share/tuxpaint/stamps/") and (path.endswith(".txt") or _tux_keep(path))


def _scratch_label(root: Path, f: Path) -> tuple[str, str]:
    return f.parent.name, f"{words(f.stem)}, {words(f.parent.name)} sound"


def _stem_label(kind: str) -> Callable[[Path, Path], tuple[str, str]]:
    def label(root: Path, f: Path) -> tuple[str, str]:
        w = words(f.stem)
        return w, f"{w}, {kind}"

    return label


def _lmms_label(root: Path, f: Path) -> tuple[str, str]:
    return f.parent.name, f"{words(f.stem)}, {words(f.parent.name)} sample"


def _hydrogen_label(root: Path, f: Path) -> tuple[str, str]:
    w = words(re.sub(r"-(Softest|Soft|Med|Hard|Hardest|\d+)$", "", f.stem))
    return w, f"{w}, a drum kit one-shot"


LIBRARIES = (
    Library(
        "scratch",
        "usr/share/scratch/Media/Sounds/",
        lambda p: p.endswith(AUDIO) and "Music Loops" not in p,
        _scratch_label,
    ),
    Library("tuxpaint-stamps-default", "usr/share/tuxpaint/stamps/", _tux_extract_keep, _tux_label),
    Library(
        "wesnoth-1.16-data",
        "usr/share/games/wesnoth/1.16/data/core/sounds/",
        lambda p: p.endswith(AUDIO),
        _stem_label("a fantasy battle sound effect"),
    ),
    Library(
        "lincity-ng-data",
        "usr/share/games/lincity-ng/sounds/",
        lambda p: p.endswith(AUDIO),
        _stem_label("a city building sound"),
    ),
    Library("hydrogen-drumkits", "usr/share/hydrogen/data/drumkits/", lambda p: p.endswith(AUDIO), _hydrogen_label),
    Library(
        "lmms-common",
        "usr/share/lmms/samples/",
        lambda p: p.endswith(AUDIO) and "/shapes/" not in p and "/waveforms/" not in p,
        _lmms_label,
    ),
)


def sfx_split(path: str, members: list[str], fraction: float) -> str:
    """'test' for about ``fraction`` of each class (at least one of classes with 3+ members)."""
    if len(members) < 3:
        return "train"
    ranked = sorted(members, key=lambda p: zlib.crc32(p.encode()))
    held = max(1, round(fraction * len(members)))
    return "test" if path in ranked[:held] else "train"


def build_sfx(out: Path, sources: Path, cfg: OpenConfig, progress: Callable | None = None) -> list[Path]:
    items: list[tuple[str, str, Path, str]] = []  # (library, class, file, caption)
    for lib in LIBRARIES:
        src = SOURCES[lib.source]
        deb = fetch(src, out / "downloads")
        root = sources / lib.source
        extract_deb(deb, root, lib.wanted)
        base = root / lib.prefix
        keep: Callable[[str], bool] = _tux_keep if lib.source.startswith("tuxpaint") else lib.keep
        for f in sorted(base.rglob("*")):
            rel = str(f.relative_to(root))
            if f.is_file() and f.suffix.lower() in AUDIO and keep(rel):
                klass, cap = lib.label(base, f)
                items.append((lib.source, klass, f, cap))
    classes: dict[tuple[str, str], list[str]] = {}
    for source, klass, f, _ in items:
        classes.setdefault((source, klass), []).append(str(f.relative_to(sources)))
    rows: dict[str, list[tuple[str, str]]] = {"train": [], "test": []}
    bar = progress(len(items), "sfx") if progress else None
    skipped = 0
    for source, klass, f, cap in items:
        rel = str(f.relative_to(sources))
        split = sfx_split(rel, classes[(source, klass)], cfg.sfx_test_fraction)
        name = f"{source.split('-')[0]}_{zlib.crc32(rel.encode()):08x}_{re.sub(r'[^A-Za-z0-9]+', '_', f.stem)[:40]}"
        target = out / "sfx" / split / f"{name}.flac"
        if not target.is_file():
            try:
                wave, sr = load_audio(f, cfg.sfx_sample_rate, duration=cfg.duration)
            except Exception as exc:  # noqa: BLE001 - a library file that does not decode is skipped, named
                _log(f"sfx: skipping {f}: {exc}")
                skipped += 1
                if bar:
                    bar.update(1)
                continue
            if wave.numel() < sr * 0.05 or float(wave.abs().max()) < 1e-4:
                skipped += 1
                if bar:
                    bar.update(1)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            write_audio(target, wave, sr)
        rows[split].append((f"{split}/{target.name}", cap))
        if bar:
            bar.update(1)
    if bar:
        bar.close()
    if skipped:
        _log(f"sfx: {skipped} files skipped (unreadable, shorter than 50 ms or silent)")
    return [_write_manifest(out / "sfx" / f"{split}.tsv", r) for split, r in rows.items()]


# -- the recipe ----------------------------------------------------------------------------------


def build_open(out: Path, cfg: OpenConfig | None = None, parts=PARTS, progress: Callable | None = None) -> dict:
    """Build ``parts`` under ``out``; returns {part: [manifest paths]} and writes ATTRIBUTION.md."""
    cfg = cfg or OpenConfig()
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown part(s) {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")
    out = Path(out)
    remove_stale(out, recursive=True)  # what a killed run was writing, anywhere in the recipe's folders
    sources = out / "sources"
    built = {}
    builders = {"foley": build_foley, "bbb": build_bbb, "sfx": build_sfx, "directed": build_directed}
    for part in PARTS:
        if part in parts:
            built[part] = builders[part](out, sources, cfg, progress)
    index = out / "manifests.json"  # parts built by earlier runs stay listed (and attributed)
    summary = json.loads(index.read_text()) if index.is_file() else {}
    summary.update({part: [str(p) for p in paths] for part, paths in built.items()})
    present = set(summary)
    used: list[Source] = []
    if present & {"foley", "sfx", "directed"}:
        used.append(SOURCES["hydrogen-drumkits"])
    if present & {"bbb", "directed"}:
        used.append(SOURCES["moviepy-sdist"])
    if "sfx" in present:
        used += [SOURCES[lib.source] for lib in LIBRARIES if lib.source != "hydrogen-drumkits"]
    note = (
        "\nThe Foley world's pictures, physics and event lists are procedural (this project, MIT); its"
        " sounds are the hydrogen-drumkits one-shots listed above.\n"
    )
    atomic_write(out / "ATTRIBUTION.md", lambda tmp: tmp.write_text(attribution(used, note)))
    atomic_write(index, lambda tmp: tmp.write_text(json.dumps(summary, indent=1)))
    return built
