"""``soundvcm curves RUN...``: training curves of one or more runs in one PNG, read from their
TensorBoard logs (``RUN/tb``): the training loss (smoothed) and the validation loss (the
flow-matching error at fixed t, comparable across objectives) against steps."""

from __future__ import annotations

from pathlib import Path

from soundvcm.atomic import atomic_write


def read_scalars(run: Path) -> dict[str, tuple[list[int], list[float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = Path(run) / "tb"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no TensorBoard log (is {run} a `soundvcm train --out` folder?)")
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {
        tag: ([e.step for e in acc.Scalars(tag)], [e.value for e in acc.Scalars(tag)]) for tag in acc.Tags()["scalars"]
    }


def _smooth(values: list[float], weight: float = 0.9) -> list[float]:
    out, last = [], None
    for v in values:
        last = v if last is None else weight * last + (1 - weight) * v
        out.append(last)
    return out


def plot_curves(runs: dict[str, Path], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, run in runs.items():
        scalars = read_scalars(run)
        if "train/loss" in scalars:
            steps, values = scalars["train/loss"]
            left.plot(steps, _smooth(values), label=name)
        if "val/val" in scalars:
            steps, values = scalars["val/val"]
            right.plot(steps, values, marker="o", ms=3, label=name)
    left.set(title="training loss (EMA-smoothed; objectives differ)", xlabel="step", yscale="log")
    right.set(title="validation: flow-matching error at t = 0.1..0.9", xlabel="step")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)
    return out
