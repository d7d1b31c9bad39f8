"""Training checkpoints: atomic, complete, and safe against kill -9 and full disks.

A checkpoint is a directory ``ckpt_STEP/`` holding ``state.safetensors`` (network weights,
optimizer moments, EMA state; flat tensor names) and ``state.json`` (step, config, optimizer
hyper-parameters, schedule, RNG states, counters). It is written as ``.ckpt_STEP.tmp/`` and renamed
to a name no other checkpoint has (``ckpt_STEP``, or ``ckpt_STEP_rN`` when that step was saved
before); then the ``latest`` pointer file is replaced atomically, and only then are older
checkpoints (beyond ``keep``, and any earlier save of the same step) deleted. A crash at any moment
leaves ``latest`` on a complete checkpoint. A failed write (a full disk: safetensors reports it as
its own error type, turned into ``OSError`` here) removes the temporary directory and keeps the
previous checkpoint. :func:`latest_checkpoint` falls back to the newest intact checkpoint, with a
warning, when ``latest`` is missing or points to a broken one. :func:`clean_stale` removes the
temporary directories a kill leaves behind.
"""

from __future__ import annotations

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
        save_tensors(tmp / "state.safetensors", tensors)
        (tmp / "state.json").write_text(json.dumps({**doc, "step": step, "optimizer": opt_doc}, indent=1))
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


def _intact(path: Path) -> bool:
    return (path / "state.safetensors").is_file() and (path / "state.json").is_file()


def latest_checkpoint(root: Path) -> Path | None:
    """The checkpoint ``latest`` names, or the newest intact one if that is broken (with a warning)."""
    pointer = root / "latest"
    named = root / pointer.read_text().strip() if pointer.is_file() else None
    if named is not None and _intact(named):
        return named
    intact = sorted((p for p in root.glob("ckpt_*") if p.is_dir() and _intact(p)), key=_order)
    if not intact:
        if named is not None:
            raise ValueError(f"{pointer} points to {named}, which is incomplete, and no other checkpoint is intact")
        return None
    if named is not None or pointer.exists():
        print(f"soundvcm: warning: {pointer} is broken; using the newest intact one, {intact[-1]}", file=sys.stderr)
    return intact[-1]


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
