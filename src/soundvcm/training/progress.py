"""Training progress: the bar's postfix and TensorBoard scalars averaged over each log interval."""

from __future__ import annotations

import math
import time


class ProgressLog:
    """The progress bar's postfix (loss, lr, it/s, loss by t bucket) and TensorBoard scalars
    averaged over each log interval."""

    def __init__(self, bar, step: int):
        self.bar, self.start, self.start_step = bar, time.perf_counter(), step
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


def _summarise(window: list[dict[str, float]]) -> dict[str, float]:
    keys = {k for r in window for k in r if k not in ("step",)}
    out = {}
    for k in keys:
        vals = [r[k] for r in window if k in r and not math.isnan(r[k])]
        if vals:
            out[k] = sum(vals) / len(vals)
    return out
