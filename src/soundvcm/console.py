"""What a long command shows while it works: a status line on a terminal, nothing when piped.

:class:`StageStatus` keeps one transient line on stderr naming the stage that is running and its
elapsed seconds (``generate clip.mp4: vocoder 3.2 s``), refreshed a few times a second by a
daemon thread, and clears it when the stage ends; :class:`soundvcm.device.StageTimer` drives it
stage by stage. When the stream is not a terminal (a log file, a pipe, CI) it writes nothing, so
piped output stays clean. Loops with a known length use tqdm bars, which follow the same rule
(``disable=None``: off when not a terminal).
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from typing import IO


def is_terminal(stream: IO[str] | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # closed or not a file
        return False


class StageStatus:
    """One transient status line per stage on a terminal (see the module docstring)."""

    def __init__(self, label: str, stream: IO[str] | None = None, every: float = 0.25):
        self.label, self.every = label, every
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = is_terminal(self.stream)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._width = 0

    def _write(self, text: str) -> None:
        pad = max(0, self._width - len(text))
        self.stream.write("\r" + text + " " * pad + ("\r" if not text else ""))
        self.stream.flush()
        self._width = len(text)

    @contextmanager
    def stage(self, name: str):
        """Show ``name`` (with its elapsed time) while the block runs; clear it afterwards."""
        if not self.enabled:
            yield
            return
        start = time.perf_counter()
        self._stop.clear()

        def refresh() -> None:
            while not self._stop.wait(self.every):
                self._write(f"{self.label}: {name} {time.perf_counter() - start:.1f} s")

        self._write(f"{self.label}: {name}")
        self._thread = threading.Thread(target=refresh, daemon=True)
        self._thread.start()
        try:
            yield
        finally:
            self._stop.set()
            self._thread.join()
            self._write("")
