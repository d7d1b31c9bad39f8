"""The open-data recipe: verified downloads, Debian packages read without dpkg, recorded one-shots,
Big Buck Bunny windows split by time, SFX captions and per-class hold-out, and object collisions."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from soundvcm.data import oneshots, sources
from soundvcm.data.open import bbb_windows, sfx_split, words
from soundvcm.data.sources import Source, SourceError, extract_deb, fetch


def _source(tmp_path: Path, payload: bytes, name: str = "pkg", sha: str | None = None) -> Source:
    blob = tmp_path / "served" / f"{name}_1.0_all.deb"
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(payload)
    digest = sha or hashlib.sha256(payload).hexdigest()
    return Source(name, blob.as_uri(), len(payload), digest, "GPL-2+", "https://example.org", "a test package")


def test_fetch_verifies_and_never_downloads_twice(tmp_path):
    src = _source(tmp_path, b"x" * 1000)
    got = fetch(src, tmp_path / "downloads")
    assert got.read_bytes() == b"x" * 1000 and not list((tmp_path / "downloads").glob("*.part"))
    (tmp_path / "served" / "pkg_1.0_all.deb").unlink()  # the source is gone: the verified copy is used
    assert fetch(src, tmp_path / "downloads") == got


def test_fetch_refuses_a_wrong_hash_and_leaves_nothing(tmp_path):
    src = _source(tmp_path, b"y" * 100, sha="0" * 64)
    with pytest.raises(SourceError, match="SHA-256"):
        fetch(src, tmp_path / "downloads")
    assert list((tmp_path / "downloads").iterdir()) == []
    bad = _source(tmp_path, b"z" * 10, name="gone")
    (tmp_path / "served" / "gone_1.0_all.deb").unlink()
    with pytest.raises(OSError, match="gone: download of .* failed"):
        fetch(bad, tmp_path / "downloads")


def test_fetch_detects_a_changed_local_copy(tmp_path):
    src = _source(tmp_path, b"a" * 64)
    got = fetch(src, tmp_path / "d")
    got.write_bytes(b"b" * 64)  # same size, other bytes
    with pytest.raises(SourceError, match="delete it and rerun"):
        fetch(src, tmp_path / "d")


def _deb(files: dict[str, bytes]) -> bytes:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as tar:
        for name, body in files.items():
            info = tarfile.TarInfo("./" + name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    members = [("debian-binary", b"2.0\n"), ("control.tar.gz", b""), ("data.tar.xz", data.getvalue())]
    out = io.BytesIO()
    out.write(b"!<arch>\n")
    for name, body in members:
        out.write(f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(body):<10}`\n".encode())
        out.write(body + (b"\n" if len(body) % 2 else b""))
    return out.getvalue()


def test_extract_deb_reads_the_data_archive_without_dpkg(tmp_path):
    deb = tmp_path / "p.deb"
    deb.write_bytes(_deb({"usr/share/a/keep.wav": b"RIFF1", "usr/share/a/drop.txt": b"no", "usr/b/keep2.wav": b"R2"}))
    got = extract_deb(deb, tmp_path / "out", lambda p: p.endswith(".wav"))
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in got) == [
        "usr/b/keep2.wav",
        "usr/share/a/keep.wav",
    ]
    assert (tmp_path / "out/usr/share/a/keep.wav").read_bytes() == b"RIFF1"
    assert not (tmp_path / "out/usr/share/a/drop.txt").exists()
    not_deb = tmp_path / "n.deb"
    not_deb.write_bytes(b"hello")
    with pytest.raises(SourceError, match="not a Debian package"):
        extract_deb(not_deb, tmp_path / "o2", lambda p: True)


def test_every_pinned_source_has_a_size_a_hash_and_a_licence():
    for s in sources.SOURCES.values():
        assert s.size > 0 and len(s.sha256) == 64 and s.licence and s.url.startswith(("http://", "https://"))


def _kit(root: Path, sr: int = 44_100) -> Path:
    """A fake hydrogen-drumkits tree: each used instrument with two velocity layers, each a click
    after 0.2 s of near-silence (louder layer = higher pitch, so layers are distinguishable)."""
    for spec in oneshots.RECORDED.values():
        for kit, pattern in spec:
            instrument = pattern.split("(")[1].split(")")[0].split("|")[0]
            folder = root / oneshots.KITS / kit
            folder.mkdir(parents=True, exist_ok=True)
            for layer, (suffix, freq) in enumerate((("Soft", 300.0), ("Hard", 900.0))):
                t = np.arange(int(0.5 * sr)) / sr
                wave = np.where(t >= 0.2, np.exp(-(t - 0.2) / 0.03) * np.sin(2 * np.pi * freq * (t - 0.2)), 0.0)
                wave += 1e-4 * np.random.default_rng(layer).standard_normal(t.size)
                name = f"{instrument}-{suffix}.wav" if "\\w" in pattern else f"{instrument}-{layer}.wav"
                sf.write(folder / name, wave.astype(np.float32), sr)
    return root


def test_recorded_bank_puts_the_onset_at_sample_zero_and_picks_layers_by_strength(tmp_path):
    bank = oneshots.RecordedBank(_kit(tmp_path))
    assert set(bank.shots) == {"wood", "metal", "glass", "rubber"}
    rng = np.random.default_rng(0)
    soft, hard = bank.oneshot("glass", 0.2, rng), bank.oneshot("glass", 1.0, rng)
    for shot in (soft, hard):
        first = int(np.argmax(np.abs(shot) > 0.05 * np.abs(shot).max()))
        assert first <= int(0.0015 * bank.sample_rate)  # trimmed: the hit starts within 1.5 ms
    assert np.abs(hard).max() == pytest.approx(1.0, abs=1e-6) and np.abs(soft).max() == pytest.approx(0.2, abs=1e-6)

    def pitch(x):
        spectrum = np.abs(np.fft.rfft(x[: bank.sample_rate // 10]))
        return np.argmax(spectrum) * 10.0

    assert pitch(soft) < 500 < pitch(hard)  # the soft layer for a weak impact, the hard one for a strong
    with pytest.raises(FileNotFoundError, match="soundvcm data open"):
        oneshots.RecordedBank(tmp_path / "nothing")


def test_oneshot_filter_selects_only_the_banks_files():
    kit = oneshots.KITS
    assert oneshots.wanted(f"{kit}/Gimme A Hand 1.0/WoodBlock-Hard.wav")
    assert oneshots.wanted(f"{kit}/Gimme A Hand 1.0/WaterglassLo-Soft.wav")
    assert oneshots.wanted(f"{kit}/Gimme A Hand 1.0/Maraca-Hard.wav")  # a palette voice of the directed world
    assert not oneshots.wanted(f"{kit}/Gimme A Hand 1.0/CajonSlaps-Hard.wav")
    assert not oneshots.wanted(f"{kit}/ForzeeStereo/RideBell-0.wav")  # left out: it re-triggers onsets
    assert not oneshots.wanted("usr/share/doc/x.wav")


def test_bbb_windows_split_by_time_with_a_gap_and_the_last_15_percent_for_test():
    windows = bbb_windows(596.0, 4.0)
    by = {s: [w for w in windows if w[0] == s] for s in ("train", "val", "test")}
    assert all(by.values())
    assert min(w[2] for w in by["test"]) >= 0.85 * 596.0 and max(w[2] + 4 for w in by["test"]) <= 596.0
    assert max(w[2] + 4 for w in by["train"]) <= 0.75 * 596.0
    assert min(w[2] for w in by["val"]) >= 0.75 * 596.0 + 4.0  # one window of gap after train
    starts = sorted(w[2] for w in windows)
    assert all(b - a >= 4.0 - 1e-9 for a, b in zip(starts, starts[1:]))  # windows never overlap
    assert [w[1] for w in by["test"]] == list(range(len(by["test"])))


def test_sfx_captions_and_per_class_holdout():
    assert words("CarPassing2") == "car passing"
    assert words("bow-puny-fire_miss") == "bow puny fire miss"
    members = [f"lib/class/{i}.wav" for i in range(20)]
    held = [m for m in members if sfx_split(m, members, 0.15) == "test"]
    assert len(held) == 3  # 15 % of 20
    assert sfx_split("a", ["a", "b"], 0.15) == "train"  # too small a class to hold out from
    assert sfx_split(members[0], members, 0.15) == sfx_split(members[0], list(reversed(members)), 0.15)


def test_objects_collide_and_both_materials_sound():
    from soundvcm.data.foley import MATERIALS, Event, FoleyConfig, _collide

    cfg = FoleyConfig()
    a = {"id": 0, "material": "wood", "pos": np.array([0.45, 0.5]), "vel": np.array([2.0, 0.0]), "start": 0.0}
    b = {"id": 1, "material": "glass", "pos": np.array([0.55, 0.5]), "vel": np.array([-2.0, 0.0]), "start": 0.0}
    events: list[Event] = []
    momentum = a["vel"] + b["vel"]
    _collide([a, b], 1.0, cfg.radius, cfg, events)
    assert sorted((e.material, e.surface) for e in events) == [("glass", "object 0"), ("wood", "object 1")]
    assert all(e.time == 1.0 and e.speed == pytest.approx(4.0) for e in events)
    e = min(MATERIALS["wood"].restitution, MATERIALS["glass"].restitution)
    assert a["vel"][0] == pytest.approx(-2.0 * e) and b["vel"][0] == pytest.approx(2.0 * e)
    np.testing.assert_allclose(a["vel"] + b["vel"], momentum)  # equal masses: momentum kept
    assert np.hypot(*(b["pos"] - a["pos"])) >= 2 * cfg.radius - 1e-9  # separated
    events.clear()
    _collide([a, b], 1.001, cfg.radius, cfg, events)  # moving apart now: no second contact
    assert events == []


TINY_BACKEND = """
import os, zipfile
NAME, VERSION = "tinypkg", "1.0"
META = f"Metadata-Version: 2.1\\nName: {NAME}\\nVersion: {VERSION}\\n"
def get_requires_for_build_wheel(config_settings=None):
    return []
def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    info = os.path.join(metadata_directory, f"{NAME}-{VERSION}.dist-info")
    os.makedirs(info)
    open(os.path.join(info, "METADATA"), "w").write(META)
    return os.path.basename(info)
def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    raise RuntimeError("a download never builds the wheel")
"""


def _tiny_index(tmp_path: Path) -> tuple[Path, bytes]:
    """A package index on disk (PEP 503 pages) serving one sdist whose build backend is in-tree,
    so preparing its metadata needs nothing from any index."""
    files = {
        "tinypkg-1.0/pyproject.toml": b'[build-system]\nrequires = []\nbuild-backend = "tinybackend"\n'
        b'backend-path = ["."]\n',
        "tinypkg-1.0/tinybackend.py": TINY_BACKEND.encode(),
        "tinypkg-1.0/PKG-INFO": b"Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n",
        "tinypkg-1.0/data/payload.bin": b"\x00payload" * 100,
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    sdist = buf.getvalue()
    page = tmp_path / "index" / "tinypkg"
    page.mkdir(parents=True)
    (page / "tinypkg-1.0.tar.gz").write_bytes(sdist)
    digest = hashlib.sha256(sdist).hexdigest()
    (page / "index.html").write_text(
        f'<html><body><a href="tinypkg-1.0.tar.gz#sha256={digest}">tinypkg-1.0.tar.gz</a></body></html>'
    )
    return tmp_path / "index", sdist


def test_a_package_index_source_is_fetched_through_pip_and_its_configured_index(tmp_path, monkeypatch):
    index, sdist = _tiny_index(tmp_path)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # only what this test configures
    monkeypatch.setenv("PIP_INDEX_URL", index.as_uri())
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    digest = hashlib.sha256(sdist).hexdigest()
    # the URL is dead (as files.pythonhosted.org's redirect path was): only pip's index can serve it
    dead = "https://files.pythonhosted.invalid/packages/source/t/tinypkg/tinypkg-1.0.tar.gz"
    src = Source(
        "tiny-sdist", dead, len(sdist), digest, "MIT", "https://example.org", "a test sdist", pip="tinypkg==1.0"
    )
    got = fetch(src, tmp_path / "downloads")
    assert got == tmp_path / "downloads" / "tinypkg-1.0.tar.gz" and got.read_bytes() == sdist
    assert sorted(p.name for p in (tmp_path / "downloads").iterdir()) == ["tinypkg-1.0.tar.gz"]  # no temporaries
    assert fetch(src, tmp_path / "downloads") == got  # verified copy, no second download
    wrong = Source("tiny-sdist", dead, len(sdist), "0" * 64, "MIT", "https://example.org", "x", pip="tinypkg==1.0")
    with pytest.raises(SourceError, match="SHA-256"):
        fetch(wrong, tmp_path / "other")
    assert list((tmp_path / "other").iterdir()) == []
    missing = Source("tiny-sdist", dead, 1, "0" * 64, "MIT", "https://example.org", "x", pip="tinypkg==2.0")
    with pytest.raises(SourceError, match="tiny-sdist: pip download tinypkg==2.0 failed"):
        fetch(missing, tmp_path / "third")
