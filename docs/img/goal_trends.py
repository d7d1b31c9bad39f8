"""Draws docs/img/lite2_goal_trends.png: issue 23's goals against training compute for the three
1-step learners of the same lite2_small network (the VCM from the FM's step 4000, MeanFlow from the
same checkpoint, the VCM from scratch), on the first 60 Foley test clips.

The numbers are the rows of BENCHMARKS.md ("Issue 23, fourth", "fifth" and "sixth session"), each
from `soundvcm bench quality --sets foley,sfx --limit 60` and `soundvcm bench listen --clips 12`;
copy a new row there first, then here. Compute is in VCM-step units (batch 16): an `--init` run
starts at 4000 (the FM's steps; an FM step costs what a VCM step does), a MeanFlow step is 1.43.

    .venv/bin/python docs/img/goal_trends.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# compute units: (onset F1, material accuracy, Foley FD, same-seed correlation or None)
RUNS = {
    "VCM from the FM at 4000": {
        5000: (0.583, 0.610, 452.8, 0.605),
        6500: (0.621, 0.658, 445.3, 0.585),
        7500: (0.636, 0.698, 446.1, 0.586),
        9000: (0.647, 0.732, 438.9, 0.560),
        11000: (0.677, 0.720, 415.0, 0.543),
        12500: (0.599, 0.700, 411.4, None),
        14500: (0.700, 0.759, 406.9, None),
        16500: (0.668, 0.780, 410.1, None),
        18000: (0.684, 0.710, 411.1, 0.525),
    },
    "MeanFlow from the FM at 4000": {
        5430: (0.547, 0.594, 451.4, 0.595),
        7575: (0.616, 0.702, 431.7, 0.559),
        8290: (0.661, 0.717, 439.7, 0.577),
        9005: (0.641, 0.705, 432.4, None),
        10435: (0.661, 0.734, 427.1, None),
    },
    "VCM from scratch": {
        2000: (0.397, 0.464, 477.0, 0.625),
        4000: (0.557, 0.571, 463.1, 0.578),
        9000: (0.569, 0.695, 434.5, 0.555),
    },
}
FM_FD = 354.2  # the FM at 4000, 25 x 2 steps, same clips: the goal is VCM FD <= 1.2x the FM's
PANELS = [
    ("onset F1 (+-50 ms)", 0, 0.8, "goal 0.8"),
    ("material accuracy", 1, 0.8, "goal 0.8"),
    ("Foley FD (aisfx)", 2, 1.2 * FM_FD, "goal 1.2x FM"),
    ("same seed, different clips (corr.)", 3, 0.3, "goal 0.3"),
]


def main(out: Path = Path(__file__).with_name("lite2_goal_trends.png")) -> None:
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, (title, col, goal, label) in zip(axes, PANELS):
        for name, rows in RUNS.items():
            pts = [(c, v[col]) for c, v in sorted(rows.items()) if v[col] is not None]
            ax.plot(*zip(*pts), "o-", label=name)
        ax.axhline(goal, color="k", ls="--", lw=1, label=label)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # no overlapping 3x10^3, 4x10^3 labels
        ax.set_xlabel("compute (VCM steps of batch 16)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    print(out)


if __name__ == "__main__":
    main()
