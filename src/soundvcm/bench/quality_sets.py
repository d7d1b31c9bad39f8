"""The test sets of ``soundvcm bench quality`` (written by ``soundvcm data open OUT``): the held-out
clips of each part, with their ground truth, captions and (Foley world) exact event lists, plus
what the reference rows need of the training splits."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

SETS = ("foley", "bbb", "sfx")


@dataclass
class Item:
    name: str
    gt: Path
    media: Path | None = None  # the video (None: text-to-audio)
    caption: str = ""
    events: list[tuple[float, str]] | None = None
    silent: list[float] | None = None  # Foley world: visible bounces without a sound (see foley.silent_contacts)


@dataclass
class TestSet:
    name: str
    items: list[Item]
    train_audio: list[Path] = field(default_factory=list)
    train_events: list[tuple[Path, list[tuple[float, str]]]] = field(default_factory=list)

    @property
    def events_known(self) -> bool:
        return self.name == "foley"

    @property
    def real_footage(self) -> bool:
        """Videos whose events nobody annotated (the film): scored against the original's onsets."""
        return not self.events_known and any(item.media is not None for item in self.items)


def _manifest(path: Path) -> list[tuple[Path, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: build the open data first with `soundvcm data open DIR`")
    rows = []
    for line in path.read_text().splitlines()[1:]:
        if line.strip():
            rel, _, caption = line.partition("\t")
            rows.append((path.parent / rel, caption))
    return rows


def _event_doc(stem: Path) -> dict:
    """A Foley clip's events.json, read once for its events and its silent contacts."""
    return json.loads((stem.parent / f"{stem.name}.events.json").read_text())


def _events(doc: dict, duration: float) -> list[tuple[float, str]]:
    return [(e["time"], e["material"]) for e in doc["events"] if e["time"] < duration]


def load_sets(data: Path, names: tuple[str, ...], duration: float, limit: int | None = None) -> list[TestSet]:
    """The test splits (and what the references need of the training splits) of ``data``."""
    sets = []
    for name in names:
        if name not in SETS:
            raise ValueError(f"unknown test set {name!r}; choose from {', '.join(SETS)}")
        test = _manifest(data / name / "test.tsv")[:limit]
        train = _manifest(data / name / "train.tsv")
        video = name != "sfx"
        items = [Item(p.stem, p.with_suffix(".flac"), p if video else None, caption) for p, caption in test]
        if name == "foley":
            from soundvcm.data.foley import silent_contacts

            for item, (p, _) in zip(items, test):
                doc = _event_doc(p.with_suffix(""))
                item.events, item.silent = _events(doc, duration), silent_contacts(doc, duration)
        train_audio = [p.with_suffix(".flac") for p, _ in train]
        train_events = (
            [(p.with_suffix(".flac"), _events(_event_doc(p.with_suffix("")), duration)) for p, _ in train[:300]]
            if name == "foley"
            else []
        )
        sets.append(TestSet(name, items, train_audio, train_events))
    return sets


def row_dir(out: Path, set_name: str, row: str) -> Path:
    """OUT/SET/ROW: where a row's audio is written (spaces and slashes of the row's name as "_")."""
    return out / set_name / row.replace(" ", "_").replace("/", "_")
