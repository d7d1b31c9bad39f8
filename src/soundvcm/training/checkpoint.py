"""Training checkpoints: atomic, complete, and safe against kill -9 and full disks.

A checkpoint is a directory ``ckpt_STEP/`` holding ``state.safetensors`` (network weights,
optimizer moments, EMA state; flat tensor names) and ``state.json`` (step, config, optimizer
hyper-parameters, schedule, RNG states, counters). It is written as ``.ckpt_STEP.tmp/`` and renamed
into place only when complete; then the ``latest`` pointer file is replaced atomically. A crash
at any moment leaves either the old or the new checkpoint as ``latest``, never a partial one;
a failed write (e.g. a full disk) raises, removes the temporary directory and keeps the
previous checkpoint. Older checkpoints beyond ``keep`` are deleted after a successful write.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from soundvcm.atomic import atomic_write


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
    tmp = root / f".ckpt_{step:09d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        opt_tensors, opt_doc = _flatten_optimizer(optimizer_state)
        tensors = {f"net.{k}": v.detach().cpu().contiguous() for k, v in net_state.items()}
        tensors.update(opt_tensors)
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema_state.items()})
        save_file(tensors, str(tmp / "state.safetensors"))
        (tmp / "state.json").write_text(json.dumps({**doc, "step": step, "optimizer": opt_doc}, indent=1))
        for f in tmp.iterdir():  # make the data durable before the rename publishes it
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        atomic_write(root / "latest", lambda p: p.write_text(final.name))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = sorted(p for p in root.glob("ckpt_*") if p.is_dir() and p != final)
    for p in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    pointer = root / "latest"
    if not pointer.is_file():
        return None
    path = root / pointer.read_text().strip()
    if not (path / "state.safetensors").is_file() or not (path / "state.json").is_file():
        raise ValueError(f"{pointer} points to {path}, which is incomplete; delete {pointer} to start over")
    return path


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
