"""Training checkpoints: atomic, complete, checksummed, and safe against kill -9, full disks, bit rot
and NaN.

A checkpoint is a directory ``ckpt_STEP/`` holding ``state.safetensors`` (network weights,
optimizer moments, EMA state; flat tensor names), ``state.json`` (step, config, optimizer
hyper-parameters, schedule, RNG states, counters) and ``checksums.json`` (the SHA-256 of both,
computed from the bytes read back after writing). Weights, moments or EMA that hold NaN or inf are
never saved (:class:`NonFiniteWeights`), so every checkpoint on disk was finite when written and
rotation, which only removes checkpoints older than the one just saved, never removes the newest
finite one. It is written as ``.ckpt_STEP.tmp/`` and renamed
to a name no other checkpoint has (``ckpt_STEP``, or ``ckpt_STEP_rN`` when that step was saved
before); then the ``latest`` pointer file is replaced atomically, and only then are older
checkpoints (beyond ``keep``, and any earlier save of the same step) deleted. A crash at any moment
leaves ``latest`` on a complete checkpoint. A failed write (a full disk: safetensors reports it as
its own error type, turned into ``OSError`` here) removes the temporary directory and keeps the
previous checkpoint. :func:`latest_checkpoint` verifies what it returns (files present, JSON
readable, checksums matching) and falls back to the newest intact checkpoint, with a warning naming
each one it passes over, when ``latest`` is missing or broken. :func:`clean_stale` removes the
temporary directories a kill leaves behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from soundvcm.atomic import atomic_write, save_tensors, umask


def _flatten_optimizer(state: dict) -> tuple[dict[str, Tensor], dict]:
    tensors, scalars = {}, {}
    for idx, entry in state["state"].items():
        for name, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, Tensor], doc: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for key, value in doc["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": doc["param_groups"]}


CHECKSUMS = "checksums.json"
FILES = ("state.safetensors", "state.json")


class NonFiniteWeights(ValueError):
    """A tensor about to be saved, or just loaded, holds NaN or inf."""


def first_nonfinite(tensors: dict[str, Tensor]) -> str | None:
    """The name of the first floating-point tensor holding NaN or inf, else None."""
    for name, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return name
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(
    root: Path,
    step: int,
    net_state: dict[str, Tensor],
    optimizer_state: dict,
    ema_state: dict[str, Tensor],
    doc: dict[str, Any],
    keep: int = 2,
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"ckpt_{step:09d}"
    revision = 0
    while final.exists():  # never replace a checkpoint in place: `latest` may point to it
        revision += 1
        final = root / f"ckpt_{step:09d}_r{revision}"
    tmp = root / f".ckpt_{step:09d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        opt_tensors, opt_doc = _flatten_optimizer(optimizer_state)
        tensors = {f"net.{k}": v.detach().cpu().contiguous() for k, v in net_state.items()}
        tensors.update(opt_tensors)
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema_state.items()})
        bad = first_nonfinite(tensors)
        if bad is not None:
            previous = (root / "latest").read_text().strip() if (root / "latest").is_file() else "none"
            raise NonFiniteWeights(
                f"step {step}: {bad} holds NaN or inf, so no checkpoint was saved; the newest good one is "
                f"{root / previous if previous != 'none' else 'none'}"
            )
        save_tensors(tmp / "state.safetensors", tensors)
        (tmp / "state.json").write_text(json.dumps({**doc, "step": step, "optimizer": opt_doc}, indent=1))
        sums = {name: _sha256(tmp / name) for name in FILES}  # of the bytes as stored, read back
        (tmp / CHECKSUMS).write_text(json.dumps(sums, indent=1))
        for f in tmp.iterdir():  # make the data durable before the rename publishes it
            os.chmod(f, 0o666 & ~umask())
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, final)
        atomic_write(root / "latest", lambda p: p.write_text(final.name))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = sorted((p for p in root.glob("ckpt_*") if p.is_dir() and p != final), key=_order)
    same_step = [p for p in old if _order(p)[0] == step]
    older = [p for p in old if _order(p)[0] < step]
    for p in same_step + older[: max(0, len(older) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def _order(path: Path) -> tuple[int, int]:
    """(step, revision) of ``ckpt_STEP`` / ``ckpt_STEP_rN``."""
    parts = path.name.split("_")
    try:
        return int(parts[1]), int(parts[2][1:]) if len(parts) > 2 else 0
    except (IndexError, ValueError):
        return -1, -1


_WARNED: set[str] = set()
_CHECKED: dict[tuple, str | None] = {}  # (path, each file's size and mtime) -> verdict, so a file is hashed once


def _signature(path: Path) -> tuple:
    stats = [(path / n).stat() for n in (*FILES, CHECKSUMS) if (path / n).is_file()]
    return (str(path.resolve()), *((s.st_size, s.st_mtime_ns) for s in stats))


def checkpoint_problem(path: Path) -> str | None:
    """Why the checkpoint ``path`` cannot be resumed from, in words (None: it is intact): a missing
    file, JSON that does not parse, or a file whose SHA-256 differs from the one saved with it.
    Checkpoints saved before checksums existed are checked for their files and JSON only. A verdict
    is remembered for the files as they are (size and mtime), so a process hashes each file once."""
    key = _signature(path)
    if key not in _CHECKED:
        _CHECKED[key] = _problem(path)
    return _CHECKED[key]


def _problem(path: Path) -> str | None:
    for name in FILES:
        if not (path / name).is_file():
            return f"{name} is missing"
    try:
        json.loads((path / "state.json").read_text())
    except (OSError, ValueError) as exc:
        return f"state.json is unreadable ({exc.__class__.__name__})"
    if not (path / CHECKSUMS).is_file():
        return None
    try:
        sums = json.loads((path / CHECKSUMS).read_text())
        expected = {name: str(sums[name]) for name in FILES}
    except (OSError, ValueError, KeyError, TypeError):
        return f"{CHECKSUMS} is unreadable"
    for name in FILES:
        if _sha256(path / name) != expected[name]:
            return f"{name} fails its checksum (the file changed after it was saved)"
    return None


def latest_checkpoint(root: Path) -> Path | None:
    """The newest intact checkpoint: the one ``latest`` names if it verifies, else the newest that
    does, with a warning naming each checkpoint passed over and why (:func:`checkpoint_problem`)."""
    pointer = root / "latest"
    named = root / pointer.read_text().strip() if pointer.is_file() else None
    candidates = sorted((p for p in root.glob("ckpt_*") if p.is_dir()), key=_order, reverse=True)
    if named is not None:
        candidates = [named] + [p for p in candidates if p != named]
    broken: list[tuple[Path, str]] = []
    for path in candidates:
        problem = checkpoint_problem(path) if path.is_dir() else "missing"
        if problem is None:
            for bad, why in broken:
                if str(bad) not in _WARNED:  # the command line and the trainer both ask: say it once
                    _WARNED.add(str(bad))
                    print(
                        f"soundvcm: warning: checkpoint {bad} is broken ({why}); using the newest intact one, {path}",
                        file=sys.stderr,
                    )
            return path
        broken.append((path, problem))
    if broken:
        listed = "; ".join(f"{p.name}: {why}" for p, why in broken[:3])
        raise ValueError(f"{root}: no intact checkpoint to resume from ({listed})")
    return None


def clean_stale(root: Path) -> list[Path]:
    """Remove the temporary checkpoint directories and files a killed run left in ``root``."""
    stale = [p for p in root.glob(".ckpt_*.tmp")] + [p for p in root.glob(".*.tmp*") if p.is_file()]
    for p in stale:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return stale


def read_checkpoint_doc(path: Path) -> dict:
    """The JSON document of a checkpoint (config, step, ...) without loading its tensors."""
    try:
        return json.loads((path / "state.json").read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable checkpoint ({exc})") from exc


def load_checkpoint(path: Path) -> tuple[dict[str, Tensor], dict, dict[str, Tensor], dict]:
    """(net state, optimizer state dict, EMA state, document)."""
    try:
        tensors = load_file(str(path / "state.safetensors"))
        doc = json.loads((path / "state.json").read_text())
    except Exception as exc:
        raise ValueError(f"{path}: unreadable checkpoint ({exc})") from exc
    net = {k[4:]: v for k, v in tensors.items() if k.startswith("net.")}
    ema = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
    return net, _unflatten_optimizer(tensors, doc.pop("optimizer")), ema, doc


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])
