"""Ctrl-C (or SIGTERM) during training: finish the step, save, stop; a second one stops at once.

SIGINT and SIGTERM only set a flag. The loop asks :meth:`StopRequest.now` at each step boundary; with
several ranks the flag is all-reduced (MAX), so every rank stops after the same step.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm


class TrainingAborted(RuntimeError):
    """Too many consecutive non-finite losses."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM: the run stopped at a step boundary and saved ``checkpoint``."""

    def __init__(self, step: int, checkpoint: Path | None):
        super().__init__(f"interrupted at step {step}")
        self.step, self.checkpoint = step, checkpoint


class StopRequest:
    def __init__(self, rank: int, world: int, device: torch.device):
        self.rank, self.world, self.device = rank, world, device
        self.requested = False

    @contextmanager
    def installed(self):
        """Handle SIGINT and SIGTERM while inside (main thread only; other threads cannot own signals)."""
        self.requested = False
        main_thread = threading.current_thread() is threading.main_thread()
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {s: signal.signal(s, self._on_sigint) for s in handled} if main_thread else {}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_sigint(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now; the last checkpoint stays as it was
        self.requested = True
        if self.rank == 0:
            tqdm.write("soundvcm: interrupted: finishing this step, then saving a checkpoint (Ctrl-C again: stop now)")

    def now(self) -> bool:
        """True on every rank when any rank was asked to stop (checked at step boundaries only)."""
        if self.world == 1:
            return self.requested
        flag = torch.tensor([1.0 if self.requested else 0.0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())
