"""Training progress: the bar's postfix and TensorBoard scalars averaged over each log interval.

On a terminal the bar shows them; when stderr is a log file or a pipe the bar stays off and one
plain line per log interval says the same (step, loss, lr, steps/s, ETA, loss by t bucket).
"""

from __future__ import annotations

import math
import sys
import time

from torch import Tensor

T_BUCKETS = (0.0, 0.25, 0.5, 0.75, 1.0001)


def loss_by_t(t: Tensor, mse: Tensor) -> dict[str, float]:
    """The step's mean MSE per bucket of t (``loss_t0.00-0.25`` ...), for the buckets it sampled."""
    out = {}
    for lo, hi in zip(T_BUCKETS[:-1], T_BUCKETS[1:]):
        mask = (t >= lo) & (t < hi)
        if mask.any():
            out[f"loss_t{lo:.2f}-{min(hi, 1):.2f}"] = float(mse[mask].mean())
    return out


class ProgressLog:
    """The progress bar's postfix (loss, lr, it/s, loss by t bucket) and TensorBoard scalars
    averaged over each log interval."""

    def __init__(self, bar, step: int, plain: bool = False):
        self.bar, self.start, self.start_step, self.plain = bar, time.perf_counter(), step, plain
        self.window: list[dict[str, float]] = []
        self.buckets: dict[str, str] = {}

    def add(self, record: dict[str, float], writer=None) -> None:
        self.window.append(record)
        rate = (record["step"] - self.start_step) / max(time.perf_counter() - self.start, 1e-9)
        postfix = {"loss": f"{record['loss']:.4f}", "lr": f"{record['lr']:.1e}", "it/s": f"{rate:.2f}"}
        if writer is not None:
            summary = _summarise(self.window)
            # loss by t bucket over the last log interval, in bucket order
            self.buckets = {
                k.removeprefix("loss_"): f"{summary[k]:.3f}" for k in sorted(summary) if k.startswith("loss_t")
            }
            for k, v in summary.items():
                writer.add_scalar(f"train/{k}", v, record["step"])
            self.window = []
        postfix.update(self.buckets)
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(1)
        if writer is not None and self.bar.disable and self.plain:
            left = (self.bar.total - record["step"]) / max(rate, 1e-9) if self.bar.total else 0.0
            fields = " ".join(f"{k}={v}" for k, v in postfix.items())
            print(f"train step {record['step']}/{self.bar.total} {fields} eta={left / 60:.0f}min", file=sys.stderr)


def _summarise(window: list[dict[str, float]]) -> dict[str, float]:
    keys = {k for r in window for k in r if k not in ("step",)}
    out = {}
    for k in keys:
        vals = [r[k] for r in window if k in r and not math.isnan(r[k])]
        if vals:
            out[k] = sum(vals) / len(vals)
    return out
