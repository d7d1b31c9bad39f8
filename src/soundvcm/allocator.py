"""The C heap's settings for CPU inference: keep freed memory for reuse instead of unmapping it.

PyTorch's CPU tensors come from ``malloc``. glibc serves a block above its mmap threshold (128 KiB
at start, raised on the fly to the largest block freed so far) with a fresh ``mmap`` and gives a
free heap top above its trim threshold back to the kernel, so each pass of a vocoder or an image
encoder over a new input touches fresh pages and pays a page fault per 4 KiB of every activation.
A fixed mmap threshold of 32 MiB (glibc's maximum on 64-bit) and a trim threshold of 1 GiB keep
those blocks in the heap: measured on ``soundvcm generate`` of the 8 s demo clip in a fresh process,
5.3-6.0 s -> 2.9 s with native bf16 and 7.0 -> 4.4-4.6 s in fp32 on AVX2, output unchanged
(BENCHMARKS.md, issue 22, fifth session). The cost: the process keeps its peak heap until it exits.

:func:`tune_malloc` applies this once, only on glibc, and never over a choice the user made: any
``MALLOC_*_`` tuning variable, an allocator in ``LD_PRELOAD`` (jemalloc, tcmalloc, mimalloc) or
``SOUNDVCM_MALLOC=system`` leaves the heap as it is. The CLI calls it before any command runs;
library users may call it themselves.
"""

from __future__ import annotations

import ctypes
import functools
import os

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc caps it at HEAP_MAX_SIZE / 2 = 32 MiB on 64-bit
TRIM_THRESHOLD = 1 << 30
USER_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
PRELOADED = ("jemalloc", "tcmalloc", "mimalloc")
REFUSED = "defaults (mallopt refused the settings)"


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
        libc.mallopt  # noqa: B018 (present on glibc; looked up here so that a missing one says "not glibc")
    except (OSError, AttributeError):
        return None
    return libc


def _user_choice() -> str | None:
    if os.environ.get("SOUNDVCM_MALLOC", "").lower() == "system":
        return "SOUNDVCM_MALLOC=system"
    preload = os.environ.get("LD_PRELOAD", "")
    for name in PRELOADED:
        if name in preload:
            return f"{name} in LD_PRELOAD"
    for name in USER_VARIABLES:
        if name in os.environ:
            return name
    return None


@functools.cache
def tune_malloc() -> str:
    """Apply the settings above where they apply; a one-line account of the heap for ``doctor``."""
    libc = _glibc()
    if libc is None:
        return "system allocator (not glibc: left as is)"
    version = libc.gnu_get_libc_version().decode()
    choice = _user_choice()
    if choice is not None:
        return f"glibc {version}, left as is ({choice})"
    if not (libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        return f"glibc {version}, {REFUSED}"
    return f"glibc {version}, mmap threshold 32 MiB, trim threshold 1 GiB (freed activations are reused)"
