"""Open sources of the data recipe: pinned URLs, verified downloads, and unpacking without tools.

Every source is a file with its size and SHA-256 (Debian's pool and PyPI keep old releases, so
the pins stay valid). :func:`fetch` downloads to ``DIR/downloads/`` through a ``.part`` file (a
rerun resumes it with an HTTP range request), checks size and hash, and only then renames it into
place; a finished, verified file is never downloaded again. A source that a package index serves
(``pip``: a requirement such as ``moviepy==2.2.1``) is fetched the way the user's pip would,
``pip download --no-deps --no-binary :all:``, so the configured index, mirror and proxy apply (a
fixed files.pythonhosted.org URL bypasses them, and its ``packages/source/`` redirect can 404);
the pinned hash is checked all the same.
:func:`extract_deb` reads a Debian package with Python alone (``ar`` + ``tar.xz``/``tar.zst``),
so the recipe also runs where ``apt``/``dpkg`` do not exist.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class SourceError(OSError):
    """A source could not be downloaded, verified or unpacked; the message names it."""


@dataclass(frozen=True)
class Source:
    name: str
    url: str
    size: int
    sha256: str
    licence: str
    homepage: str
    what: str  # one line for ATTRIBUTION.md
    pip: str | None = None  # a requirement pip downloads (its index, mirror and proxy) instead of the URL

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[1].replace("%3a", ":")


DEBIAN = "http://deb.debian.org/debian/pool/main"
SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            "hydrogen-drumkits",
            f"{DEBIAN}/h/hydrogen-drumkits/hydrogen-drumkits_2017.09.19~dfsg-1_all.deb",
            142_675_622,
            "6ea3c6df9a67762e2362f946c695e619859126b19fbccf32a2e8f07dfd03b2f4",
            "GPL-2+ (Gimme A Hand, The Black Pearl, ForzeeStereo kits); per kit in its drumkit.xml",
            "https://packages.debian.org/bookworm/hydrogen-drumkits",
            "recorded percussion one-shots (woodblocks, claves, cowbells, water glasses, cajon) in velocity layers",
        ),
        Source(
            "scratch",
            f"{DEBIAN}/s/scratch/scratch_1.4.0.6~dfsg1-6.1_all.deb",
            25_654_320,
            "36c582eb93110f64f06c4e685c41e933ccba2fa68db12f79b10bfe840b21fc10",
            "CC-BY-SA-3.0 (Scratch media library, MIT Media Lab)",
            "https://packages.debian.org/bookworm/scratch",
            "the Scratch 1.4 sound library: animals, effects, instruments, percussion",
        ),
        Source(
            "lmms-common",
            f"{DEBIAN}/l/lmms/lmms-common_1.2.2+dfsg1-6_all.deb",
            8_263_276,
            "7d9aa55dd05f11edc57104203ee1c350e3e41f8936ab3741da2bb1158fd46c37",
            "GPL-2+",
            "https://packages.debian.org/bookworm/lmms-common",
            "LMMS sample library: drums, effects, instruments",
        ),
        Source(
            "tuxpaint-stamps-default",
            f"{DEBIAN}/t/tuxpaint-stamps/tuxpaint-stamps-default_2022.06.04-1_all.deb",
            160_880_444,
            "6db6c1bfc870a47f1499d6203b083522eacb57c5f9c87d468f2e92eb6d9d5f34",
            "GPL-2+ (Tux Paint stamps, New Breed Software and contributors)",
            "https://packages.debian.org/bookworm/tuxpaint-stamps-default",
            "Tux Paint stamps: sound effects (mostly animal calls) with a picture and a caption each",
        ),
        Source(
            "wesnoth-1.16-data",
            f"{DEBIAN}/w/wesnoth-1.16/wesnoth-1.16-data_1.16.9-1_all.deb",
            146_229_044,
            "1012b964bd412a6770685e3324ae3b61e176caff7846192d1ee63d55cd621e26",
            "GPL-2+ (The Battle for Wesnoth project)",
            "https://packages.debian.org/bookworm/wesnoth-1.16-data",
            "The Battle for Wesnoth's sound effects: weapons, hits, magic, creatures",
        ),
        Source(
            "lincity-ng-data",
            f"{DEBIAN}/l/lincity-ng/lincity-ng-data_2.9~git20150314-5_all.deb",
            44_782_216,
            "8f5e85bd42879abdc7099b035d7a3d7468eceb6b93b52a12270c28f3f3c792f9",
            "GPL-2+ (LinCity-NG project)",
            "https://packages.debian.org/bookworm/lincity-ng-data",
            "LinCity-NG's building and city sounds: blacksmith, farm, fire, coal mine, traffic",
        ),
        Source(
            "moviepy-sdist",
            "https://files.pythonhosted.org/packages/source/m/moviepy/moviepy-2.2.1.tar.gz",
            58_431_438,
            "c80cb56815ece94e5e3e2d361aa40070eeb30a09d23a24c4e684d03e16deacb1",
            "Big Buck Bunny: CC-BY-3.0 (c) Blender Foundation, www.bigbuckbunny.org; moviepy itself MIT",
            "https://peach.blender.org/",
            "the full Big Buck Bunny film (596 s, 24 fps, AAC stereo) inside moviepy's documentation media",
            pip="moviepy==2.2.1",
        ),
    )
}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, source: Source) -> None:
    size = path.stat().st_size
    if size != source.size:
        raise SourceError(f"{source.name}: {path} has {size} bytes, expected {source.size}")
    digest = sha256_file(path)
    if digest != source.sha256:
        raise SourceError(f"{source.name}: {path} has SHA-256 {digest}, expected {source.sha256}; delete it and rerun")


def fetch(source: Source, folder: Path, progress: Callable[[int, int], None] | None = None) -> Path:
    """The verified file of ``source`` in ``folder`` (downloaded or resumed when missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / source.filename
    if final.is_file():
        verify(final, source)
        return final
    if source.pip is not None:
        return _pip_download(source, final)
    part = final.with_name(final.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    if have > source.size:
        part.unlink()
        have = 0
    if have < source.size:
        request = urllib.request.Request(source.url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                if have and response.status != 206:  # the server ignored the range: start over
                    have = 0
                with open(part, "ab" if have else "wb") as out:
                    while block := response.read(1 << 20):
                        out.write(block)
                        have += len(block)
                        if progress is not None:
                            progress(have, source.size)
        except (urllib.error.URLError, OSError) as exc:
            raise SourceError(f"{source.name}: download of {source.url} failed ({exc}); rerun to resume") from None
    try:
        verify(part, source)
    except SourceError:
        part.unlink(missing_ok=True)  # a corrupt partial file would fail the same way again
        raise
    os.replace(part, final)
    return final


def _pip_download(source: Source, final: Path) -> Path:
    assert source.pip is not None
    """``pip download`` of ``source.pip`` (an sdist) into a temporary folder beside ``final``,
    verified, then renamed into place; pip's own configuration (index, mirror, proxy) applies."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix=".pip-", dir=final.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q", "-d", tmp]
        cmd.append(source.pip)
        try:
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SourceError(f"{source.name}: pip download {source.pip} failed ({exc}); rerun") from None
        got = Path(tmp) / source.filename
        if run.returncode != 0 or not got.is_file():
            why = (run.stderr.strip().splitlines() or ["no file named " + source.filename])[-1]
            raise SourceError(f"{source.name}: pip download {source.pip} failed ({why}); check pip's index settings")
        verify(got, source)
        os.replace(got, final)
    return final


def _ar_members(data: bytes):
    if not data.startswith(b"!<arch>\n"):
        raise SourceError("not a Debian package (no ar header)")
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos : pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        yield name, pos + 60, size
        pos += 60 + size + (size % 2)


def extract_deb(deb: Path, dest: Path, keep: Callable[[str], bool]) -> list[Path]:
    """Unpack the members of ``deb``'s data archive whose path passes ``keep`` into ``dest``
    (paths kept as in the package, without the leading ``./``); already present files are skipped."""
    with open(deb, "rb") as f:
        raw = f.read()
    for name, start, size in _ar_members(raw):
        if name.startswith("data.tar"):
            blob = raw[start : start + size]
            break
    else:
        raise SourceError(f"{deb}: no data.tar member")
    if name.endswith(".zst"):
        try:
            import zstandard
        except ImportError:
            raise SourceError(f"{deb} is zstd-compressed: pip install zstandard") from None
        blob = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob)).read()
        mode = "r:"
    else:
        mode = {"xz": "r:xz", "gz": "r:gz", "bz2": "r:bz2"}.get(name.rsplit(".", 1)[-1], "r:")
    written = []
    with tarfile.open(fileobj=io.BytesIO(blob), mode=mode) as tar:  # type: ignore[call-overload]
        for member in tar:
            path = member.name.removeprefix("./")
            if not member.isfile() or not keep(path) or ".." in Path(path).parts:
                continue
            target = dest / path
            if not target.is_file() or target.stat().st_size != member.size:
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(target.name + ".tmp")
                source = tar.extractfile(member)
                assert source is not None  # a regular file member always has data
                with source as src, open(tmp, "wb") as out:
                    shutil.copyfileobj(src, out)
                os.replace(tmp, target)
            written.append(target)
    return written


def extract_tar_member(archive: Path, member_suffix: str, dest: Path) -> Path:
    """The first member of a .tar.gz whose name ends with ``member_suffix``, copied to ``dest``."""
    if dest.is_file():
        return dest
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(member_suffix):
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp = dest.with_name(dest.name + ".tmp")
                source = tar.extractfile(member)
                assert source is not None  # a regular file member always has data
                with source as src, open(tmp, "wb") as out:
                    shutil.copyfileobj(src, out)
                os.replace(tmp, dest)
                return dest
    raise SourceError(f"{archive}: no member ending in {member_suffix}")


def attribution(used: list[Source], extra: str = "") -> str:
    lines = ["# Attribution", "", "Data written by `soundvcm data open`, from these sources:", ""]
    for s in used:
        lines += [
            f"## {s.name}",
            f"- what: {s.what}",
            f"- licence: {s.licence}",
            f"- from: {s.url}",
            f"- sha256: {s.sha256}",
            f"- home: {s.homepage}",
            "",
        ]
    return "\n".join(lines) + extra
