"""``soundvcm bench toy --finetune``: VCM fine-tuned from a flow-matching checkpoint vs VCM from scratch.

On the exact-flow bed (one mixture per seed): flow matching trains first (its EMA weights are the
checkpoint), then two VCM runs with the same recipe and step budget start from it and from a
fresh network. The 1-step SW2 of each run's EMA is measured every ``every`` steps against exact
guided samples. Issue 15's goal: the fine-tuned run reaches the from-scratch run's final 1-step
SW2 within 1/3 of the steps (this is ``soundvcm train --init`` on the toy).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch

from soundvcm.atomic import atomic_write
from soundvcm.bench.toy import _stepper, evaluation_set, sample_setting, train_variant
from soundvcm.bench.toy_config import ToyBenchConfig, Variant
from soundvcm.exact_flow import classwise_sw2
from soundvcm.network.toy import ToyVelocityNet
from soundvcm.training.ema import EMA

FM, VCM = Variant("fm", "fm"), Variant("vcm", "vcm")


@dataclass(frozen=True)
class FinetuneConfig:
    fm_steps: int = 4000
    vcm_steps: int = 4000
    every: int = 200


def _curve(cfg: ToyBenchConfig, seed: int, steps: int, every: int, init: dict | None) -> list[tuple[int, float]]:
    """(step, 1-step SW2 of the EMA) along one VCM run, from ``init`` weights or from scratch."""
    stepper = _stepper(cfg, VCM, seed, steps)
    if init is not None:
        stepper.net.load_state_dict(init)
        stepper.ema = EMA(stepper.net, cfg.ema_decay)  # the EMA starts at the checkpoint
    ev = evaluation_set(cfg, seed)
    points = []
    for step in range(steps):
        stepper(step)
        if (step + 1) % every == 0 or step + 1 == steps:
            x = sample_setting(cast(ToyVelocityNet, stepper.ema.model), VCM, 1, ev["labels"], ev["noise"], cfg)
            points.append((step + 1, classwise_sw2(x, ev["target"], ev["labels"], seed=seed)))
    return points


def run_seed(cfg: ToyBenchConfig, ft: FinetuneConfig, seed: int) -> dict[str, Any]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _, fm_ema = train_variant(cfg, FM, seed, ft.fm_steps)
        init = {k: v.clone() for k, v in fm_ema.state_dict().items()}
        scratch = _curve(cfg, seed, ft.vcm_steps, ft.every, None)
        tuned = _curve(cfg, seed, ft.vcm_steps, ft.every, init)
    finally:
        torch.set_num_threads(threads)
    goal = scratch[-1][1]
    reach = next((step for step, sw2 in tuned if sw2 <= goal), None)
    return {
        "seed": seed,
        "scratch": scratch,
        "finetuned": tuned,
        "scratch_final": goal,
        "reach_step": reach,
        "ratio": None if reach is None else reach / ft.vcm_steps,
    }


def table(results: list[dict[str, Any]], ft: FinetuneConfig) -> str:
    lines = [
        f"FM {ft.fm_steps} steps, then VCM {ft.vcm_steps} steps from it or from scratch (1-step SW2 of the EMA, "
        f"measured every {ft.every} steps)\n",
        "| seed | scratch final SW2@1 | fine-tuned final SW2@1 | fine-tuned reaches it at step | ratio | <= 1/3 |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.3f}"
        met = "no" if r["ratio"] is None or r["ratio"] > 1 / 3 else "yes"
        lines.append(
            f"| {r['seed']} | {r['scratch_final']:.3f} | {r['finetuned'][-1][1]:.3f} | "
            f"{r['reach_step'] or 'never'} | {ratio} | {met} |"
        )
    ratios = [r["ratio"] if r["ratio"] is not None else float("inf") for r in results]
    lines.append(f"\nmedian ratio over seeds: {statistics.median(ratios):.3f} (goal <= 0.333)")
    return "\n".join(lines)


def curve_plot(path: Path, results: list[dict[str, Any]]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, r in enumerate(results):
        colour = f"C{i}"
        ax.plot(*zip(*r["scratch"]), color=colour, ls="--", label=f"seed {r['seed']} scratch")
        ax.plot(*zip(*r["finetuned"]), color=colour, label=f"seed {r['seed']} from FM")
    ax.set_xlabel("VCM steps")
    ax.set_ylabel("1-step SW2 (EMA)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)
    return path


def run_finetune(cfg: ToyBenchConfig, ft: FinetuneConfig, out: Path | None = None, progress=None) -> dict[str, Any]:
    results = []
    for seed in cfg.seeds:
        results.append(run_seed(cfg, ft, seed))
        if progress is not None:
            progress(1)
    doc: dict[str, Any] = {"results": results, "table": table(results, ft)}
    if out is not None:
        doc["plot"] = str(curve_plot(Path(out) / f"toy_d{cfg.dim}_finetune.png", results))
    return doc
