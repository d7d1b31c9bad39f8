"""The one training step, shared by the trainer and the benchmarks.

One optimizer step over micro-batches: the objective's loss (Eq. 4 for flow matching, Eq. 10's
regression for velocity consistency, with Alg. 1's weighting inside the objective), backward of
loss / micro-batches, an optional gradient reduction across ranks, clipping and the optimizer
update. A non-finite loss on any micro-batch (or any rank) skips the update and leaves no
gradients behind.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from soundvcm.conditions import Batch
from soundvcm.training.parallel import LocalEngine


@dataclass
class StepOutput:
    finite: bool
    loss: float  # mean over micro-batches (nan when skipped)
    grad_norm: float  # before clipping (nan when skipped)
    t: Tensor  # the rows' times, for per-t loss buckets
    mse: Tensor  # the rows' unweighted MSE


def optimization_step(
    engine: LocalEngine,
    batches: Iterable[tuple[Batch, torch.Generator | None]],
    optimizer: torch.optim.Optimizer,
    step: int,
    *,
    lr: float,
    grad_clip: float,
    accumulation: int = 1,
) -> StepOutput:
    """One update from ``accumulation`` micro-batches (drawn lazily from ``batches``, each with the
    generator its objective draws times and noise from). ``engine`` computes each loss and combines
    the gradients across ranks (training/parallel.py: local, DDP, FSDP2 or a flat all-reduce)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    losses, ts, mses, finite = [], [], [], True
    for micro, (batch, generator) in zip(range(accumulation), batches):
        with engine.accumulating(last=micro == accumulation - 1):
            out = engine.loss(batch, step, generator)
            finite = finite and bool(torch.isfinite(out.loss))
            # under DDP/FSDP every rank runs every backward (their collectives must pair up); a
            # non-finite step is then dropped below on all ranks together
            if finite or engine.always_backward:
                (out.loss / accumulation).backward()
        losses.append(float(out.loss.detach()))
        ts.append(out.t.detach().float().cpu())
        mses.append(out.mse.detach().float().cpu())
    finite = engine.finish(params, finite)
    t, mse = torch.cat(ts), torch.cat(mses)
    if not finite:
        optimizer.zero_grad(set_to_none=True)
        return StepOutput(False, float("nan"), float("nan"), t, mse)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    return StepOutput(True, sum(losses) / len(losses), float(grad_norm), t, mse)
