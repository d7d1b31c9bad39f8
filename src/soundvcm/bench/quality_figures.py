"""``bench quality``'s figures for one test set (a :class:`soundvcm.bench.quality.TestSet`): the
spectrogram grid (ground truth and every row) and the sync plot (exact event times against the
onsets detected in each row)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from soundvcm.atomic import atomic_write
from soundvcm.bench.quality_sets import row_dir
from soundvcm.media.audio import load_audio


def _logmel(path: Path, sample_rate: int) -> np.ndarray:
    from soundvcm.media.mel import MEL_HIFIGAN, mel_spectrogram

    wave, _ = load_audio(path, sample_rate)
    return mel_spectrogram(wave[None], MEL_HIFIGAN)[0].clamp(min=math.log(1e-5)).numpy()


def spectrogram_grid(out: Path, ts, rows: list[str], sample_rate: int, clips: int = 3) -> Path:
    """Ground truth and every row (lines) for the first ``clips`` test clips (columns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = ts.items[:clips]
    names = ["gt", *rows]
    fig, axes = plt.subplots(len(names), len(items), figsize=(3.2 * len(items), 1.25 * len(names)), squeeze=False)
    for c, item in enumerate(items):
        for r, row in enumerate(names):
            ax = axes[r][c]
            ax.imshow(
                _logmel(row_dir(out, ts.name, row) / f"{item.name}.flac", sample_rate),
                origin="lower",
                aspect="auto",
                cmap="magma",
                vmin=math.log(1e-5),
                vmax=2.0,
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(row, rotation=0, ha="right", va="center", fontsize=8)
            if r == 0:
                ax.set_title(item.name, fontsize=8)
    fig.suptitle(f"{ts.name}: log-mel spectrograms (22.05 kHz, 80 bands), ground truth first", fontsize=9)
    fig.tight_layout()
    path = out / f"{ts.name}_spectrograms.png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)
    return path


def sync_plot(out: Path, ts, rows: list[str], sample_rate: int, clips: int = 3) -> Path:
    """Per clip: the exact event times (lines, coloured by material) against the onsets detected
    in the ground truth and in every row (markers, one line per row)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from soundvcm.evaluation.events import detect_onsets

    colours = {"wood": "tab:brown", "metal": "tab:gray", "glass": "tab:cyan", "rubber": "tab:red"}
    items = ts.items[:clips]
    names = ["gt", *rows]
    fig, axes = plt.subplots(len(items), 1, figsize=(9, 0.45 * len(names) * len(items) + 1), squeeze=False)
    for ax, item in zip(axes[:, 0], items):
        for t, m in item.events:
            ax.axvline(t, color=colours.get(m, "k"), alpha=0.6, lw=1.5)
        for y, row in enumerate(names):
            wave, _ = load_audio(row_dir(out, ts.name, row) / f"{item.name}.flac", sample_rate)
            onsets = detect_onsets(wave, sample_rate)
            ax.plot(onsets, [y] * len(onsets), "k|", ms=10, mew=2)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_ylim(-0.7, len(names) - 0.3)
        ax.set_title(f"{item.name}: event times (lines: " + ", ".join(colours) + ") vs detected onsets (|)", fontsize=8)
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    path = out / f"{ts.name}_sync.png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)
    return path
