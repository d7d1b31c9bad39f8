"""Weight files, the lowest layer every model module builds on: loading, checksums, strict keys.

Nothing here knows a model. A model module declares the files it needs as :class:`WeightFile`
(name, URL, md5, and a builder of the state-dict shapes it must hold); :mod:`soundvcm.registry`
only gathers those declarations for ``soundvcm weights``. Files live in ``$SOUNDVCM_WEIGHTS``
(default ``~/.cache/soundvcm/weights``); :func:`download` checks the md5 before renaming into
place, so an interrupted download never looks complete, and :func:`resolve` names the command
that fetches a missing or damaged file. Nothing is unpickled: safetensors or
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import urllib.request
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor, nn
from tqdm import tqdm

from soundvcm.atomic import md5sum, unreadable

RELEASES = "https://github.com/hkchengrex/MMAudio/releases/download/v0.1"
HF_MMAUDIO = "https://huggingface.co/hkchengrex/MMAudio/resolve/main/weights"


@contextmanager
def no_init():
    """Skip the random initialisation of modules built inside the block (as transformers'
    ``no_init_weights``): for modules whose every weight is loaded strictly right after, it only
    costs start-up time (~0.2 s of a fresh ``generate`` on 2 cores). Buffers are not affected."""
    names = ("uniform_", "normal_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_", "xavier_normal_")
    saved = {n: getattr(torch.nn.init, n) for n in names}
    for n in names:
        setattr(torch.nn.init, n, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for n, fn in saved.items():
            setattr(torch.nn.init, n, fn)


class WeightsError(ValueError):
    """Weights that are missing, unreadable, fail their checksum, or don't fit the module."""


@dataclass(frozen=True)
class WeightFile:
    """One downloadable file. ``shapes`` builds the expected {key: shape} (on the meta device);
    ``prepare`` maps the file's state to the keys compared (unwrapping, dropping unused parts)."""

    name: str
    filename: str
    url: str
    md5: str | None  # None: upstream publishes no checksum; the strict key check still applies
    description: str
    sha256_prefix: str | None = None  # torch.hub-style names carry the first hex digits of the SHA-256
    shapes: Callable[[], dict[str, tuple[int, ...]]] | None = None
    prepare: Callable[[dict], dict] | None = None


def module_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def weights_dir() -> Path:
    return Path(os.environ.get("SOUNDVCM_WEIGHTS", Path.home() / ".cache" / "soundvcm" / "weights"))


def package_dir(package: str, hint: str) -> Path:
    """The directory of an installed (weights) package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(f"the weights package '{package}' is not installed. {hint}")
    return Path(list(spec.submodule_search_locations)[0])


def resolve(w: WeightFile, directory: Path | None = None, check_md5: bool = True) -> Path:
    """The local path of a declared file, verified; a clear error if it is missing or wrong."""
    path = (directory or weights_dir()) / w.filename
    fetch = f"Fetch it with: soundvcm weights download {w.name}  (or place {w.url} there)"
    problem = unreadable(path)
    if problem == "not found":
        raise WeightsError(f"{w.description}: {path} not found. {fetch}")
    if problem is not None:
        raise WeightsError(f"{w.description}: {path} {problem}")
    if check_md5 and w.sha256_prefix is not None:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if not digest.startswith(w.sha256_prefix):
            raise WeightsError(f"{path}: SHA-256 {digest[:8]}... does not start with {w.sha256_prefix}. {fetch}")
    if check_md5 and w.md5 is not None:
        got = md5sum(path)
        if got != w.md5:
            raise WeightsError(
                f"{path}: md5 {got} does not match the expected {w.md5} (a corrupt or partial file?). {fetch}"
            )
    return path


def download(w: WeightFile, directory: Path | None = None, force: bool = False) -> Path:
    """Download one declared file (skipped if present and valid); md5 checked before the rename."""
    directory = directory or weights_dir()
    target = directory / w.filename
    if target.is_file() and not force:
        try:
            return resolve(w, directory)
        except WeightsError:
            pass  # present but wrong: download again
    directory.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part")
    try:
        with urllib.request.urlopen(w.url, timeout=60) as response, open(tmp, "wb") as f:
            total = int(response.headers.get("content-length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=w.filename) as bar:
                while block := response.read(1 << 20):
                    f.write(block)
                    bar.update(len(block))
        if w.md5 is not None and (got := md5sum(tmp)) != w.md5:
            raise WeightsError(f"{w.url}: downloaded file has md5 {got}, expected {w.md5}")
        if w.sha256_prefix is not None and not hashlib.sha256(tmp.read_bytes()).hexdigest().startswith(w.sha256_prefix):
            raise WeightsError(f"{w.url}: downloaded file's SHA-256 does not start with {w.sha256_prefix}")
        os.replace(tmp, target)
    except OSError as exc:
        raise WeightsError(
            f"could not download {w.url} ({exc}); check the network or place the file at {target}"
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return target


def expected_keys(w: WeightFile) -> dict[str, tuple[int, ...]] | None:
    """The keys and shapes the file must hold (None for files that are not state dicts)."""
    if w.shapes is None:
        return None
    with torch.device("meta"):
        return w.shapes()


def check_keys(w: WeightFile, state: dict) -> None:
    """Raise WeightsError unless ``state`` (weight norm folded) has exactly the expected keys and shapes."""
    expected = expected_keys(w)
    if expected is None:
        return
    for wrapper in ("generator", "model"):
        if isinstance(state, dict) and wrapper in state and isinstance(state[wrapper], dict):
            state = state[wrapper]
    if w.prepare is not None:
        state = w.prepare(state)
    got = {k: tuple(v.shape) for k, v in fold_weight_norm(state).items()}
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
    if missing or extra or wrong:
        raise WeightsError(
            f"{w.name}: the file's keys do not match: {len(missing)} missing {missing[:3]}, "
            f"{len(extra)} unexpected {extra[:3]}, {len(wrong)} with other shapes {wrong[:3]}"
        )


def load_weights(path: str | Path, what: str, fetch_hint: str = "") -> dict[str, Tensor]:
    """A state dict from safetensors or a weights-only torch file, with errors that say what to do."""
    path = Path(path)
    problem = unreadable(path)
    if problem == "not found":
        raise WeightsError(f"{what}: weights file {path} not found. {fetch_hint}".strip())
    if problem is not None:
        raise WeightsError(f"{what}: weights file {path} {problem}")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{what}: {path} is not a readable weights file ({exc.__class__.__name__})") from exc


def load_state_dict_strict(net: nn.Module, state: dict[str, Tensor], source: str = "checkpoint") -> None:
    """Load ``state`` into ``net`` only if keys and shapes match exactly; otherwise raise a
    ValueError naming the first missing, unexpected and mis-shaped entries."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs network {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (first: {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} (first: {', '.join(unexpected[:3])})")
        if shapes:
            parts.append(f"shape mismatch {len(shapes)} (first: {'; '.join(shapes[:3])})")
        raise ValueError(f"{source} does not fit the network: " + "; ".join(parts))
    net.load_state_dict(state, strict=True)


def load_export(stem: str | Path, what: str) -> tuple[dict, dict[str, Tensor]]:
    """(shape, fp32 state) of a ``soundvcm vocoder export`` stem (STEM.json + STEM.safetensors),
    each missing or unreadable part named."""
    import json

    stem = Path(stem)
    meta, weights = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
    if not meta.is_file() or not weights.is_file():
        raise WeightsError(f"{what}: {weights} or its .json is missing (`soundvcm vocoder export` writes them)")
    try:
        shape = json.loads(meta.read_text())["shape"]
        shape.get("kind")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise WeightsError(f"{what}: {meta} is not a `soundvcm vocoder export` description ({exc})") from exc
    return shape, {k: v.float() for k, v in load_weights(weights, what).items()}


def load_strict(module: nn.Module, state: dict[str, Tensor], what: str) -> None:
    """Strict load with the first mismatches named, as a WeightsError."""
    try:
        load_state_dict_strict(module, state, source=what)
    except ValueError as exc:
        raise WeightsError(str(exc)) from exc


WEIGHT_NORM_SUFFIXES = (
    (".weight_g", ".weight_v"),  # torch.nn.utils.weight_norm
    (".parametrizations.weight.original0", ".parametrizations.weight.original1"),  # parametrizations.weight_norm
)


def fold_weight_norm(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """weight = g v / ||v|| for ``weight_g``/``weight_v`` and for parametrizations' ``original0/1``."""
    out: dict[str, Tensor] = {}
    pairs: dict[str, dict[str, Tensor]] = {}
    for k, v in state.items():
        for g_suffix, v_suffix in WEIGHT_NORM_SUFFIXES:
            if k.endswith(g_suffix) or k.endswith(v_suffix):
                base = k[: -len(g_suffix)] if k.endswith(g_suffix) else k[: -len(v_suffix)]
                pairs.setdefault(base, {})["g" if k.endswith(g_suffix) else "v"] = v
                break
        else:
            out[k] = v
    for base, gv in pairs.items():
        if set(gv) != {"g", "v"}:
            raise WeightsError(f"weight-norm entry {base} has only its {''.join(gv)} part")
        v = gv["v"]
        out[base + ".weight"] = gv["g"] * v / v.norm(dim=tuple(range(1, v.dim())), keepdim=True)
    return out
