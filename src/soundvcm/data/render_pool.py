"""A split's synthetic clips rendered in worker processes (``soundvcm data open --jobs``, ``data foley --jobs``).

Each clip of the Foley worlds is drawn from its own seed (``clip_seed(split, index)``) and written by
one call, so its files do not depend on how many processes rendered the split or in which order.
Finished clips (events JSON, mp4 and flac all present) are read back before any work is handed out,
so a rerun resumes. Workers are spawned, not forked (the parent has imported torch, whose OpenMP
pool does not survive a fork), and render on one thread each: the processes are the parallelism.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

_RENDER: Callable[[int], dict] | None = None  # set in each worker by _init


def default_jobs() -> int:
    """One process per CPU this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def finished(stem: Path) -> dict | None:
    """The events document of a finished clip at ``stem`` (NAME.events.json, .mp4 and .flac), else None."""
    events = stem.parent / f"{stem.name}.events.json"
    if events.is_file() and stem.with_suffix(".mp4").is_file() and stem.with_suffix(".flac").is_file():
        return json.loads(events.read_text())
    return None


def _init(render: Callable[[int], dict]) -> None:
    import torch

    global _RENDER
    _RENDER = render
    torch.set_num_threads(1)


def _render(index: int) -> dict:
    assert _RENDER is not None, "worker not initialised"
    return _RENDER(index)


def render_split(stems: list[Path], render: Callable[[int], dict], jobs: int = 1, progress=None) -> list[dict]:
    """The events document of each clip ``stems[i]``: read back where it is finished, else from
    ``render(i)`` (a picklable callable that writes clip ``i`` and returns its document), here
    (``jobs`` 1) or in ``jobs`` worker processes. ``progress(n)`` after every ``n`` clips."""
    docs = [finished(stem) for stem in stems]
    todo = [i for i, doc in enumerate(docs) if doc is None]
    if progress is not None and len(todo) < len(stems):
        progress(len(stems) - len(todo))
    if jobs <= 1 or len(todo) < 2:
        results = map(render, todo)
        return _collect(docs, todo, results, progress)
    context = multiprocessing.get_context("spawn")
    workers = min(jobs, len(todo))
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init, initargs=(render,)) as pool:
        return _collect(docs, todo, pool.map(_render, todo), progress)


def _collect(docs: list[dict | None], todo: list[int], results, progress) -> list[dict]:
    for i, doc in zip(todo, results):
        docs[i] = doc
        if progress is not None:
            progress(1)
    if any(doc is None for doc in docs):
        raise RuntimeError("a clip was neither finished nor rendered")
    return [doc for doc in docs if doc is not None]
