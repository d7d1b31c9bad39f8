"""``soundvcm bench toy``: flow matching, velocity consistency and MeanFlow on exact flows.

The same small network (:class:`~soundvcm.network.toy.ToyVelocityNet`) is trained with each
*variant* (an objective preset plus config changes) on class-conditional Gaussian mixtures whose
guided flow is known exactly (:mod:`soundvcm.exact_flow`). All aim at one target: the endpoint of
the exact ODE under the guidance rule the models learn (scale w where t <= 0.8, the conditional
field above); flow matching samples with that same rule.

**Equal cost, by steps.** VCM trains for a fixed number of steps (``vcm_steps``). Every other
variant gets the number of steps whose *process CPU time* equals VCM's, from a short calibration
of every variant's full training step at the start of the run, timed in interleaved rounds (CPU
time, not wall time, and load that comes and goes falls on all variants alike, so a busy machine
moves the step counts little and, once they are fixed, the results not at all).
Step counts and per-step costs are recorded in the JSON; ``--replay`` reuses them and is
bit-reproducible.

**Several mixtures.** Each variant is trained and evaluated on every seed of ``seeds`` (the seed
draws the mixture, the initial network and all training noise); tables report the mean and
standard deviation over seeds of each figure, and the floor (SW2 between two exact sample sets)
per seed. Jobs (variant, seed) run in ``workers`` processes with one thread each, so the numbers
do not depend on the number of workers.

Reported: sliced W2 to exact target samples per sampler setting (EMA weights; raw weights too),
the MSE of u(x, t, s) against the exact average velocity on held-out (x, t, s < t), step counts,
CPU milliseconds per step and peak memory.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import time
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any, cast

import torch
from tqdm.auto import tqdm

from soundvcm.bench.measure import peak_memory_mb
from soundvcm.bench.toy_config import (  # noqa: F401  (re-exported: the bench's public names)
    ABLATION_VARIANTS,
    CONSISTENCY_STEPS,
    FM_STEPS,
    MAIN_VARIANTS,
    QUICK,
    ToyBenchConfig,
    Variant,
)
from soundvcm.bench.toy_report import goals_table, markdown_tables, summarise
from soundvcm.conditions import Batch
from soundvcm.exact_flow import GaussianMixtureFlow, classwise_sw2
from soundvcm.flow import interpolate
from soundvcm.network.toy import ToyVelocityNet
from soundvcm.objectives import TimeSampling, build_objective
from soundvcm.sampling import ConsistencyOptions, EulerOptions, initial_noise, sample
from soundvcm.training.ema import EMA
from soundvcm.training.parallel import LocalEngine
from soundvcm.training.step import optimization_step


def _batch(flow: GaussianMixtureFlow, net: ToyVelocityNet, n: int, g: torch.Generator) -> Batch:
    labels = torch.randint(0, flow.spec.num_classes, (n,), generator=g)
    return Batch(x0=flow.sample_data(labels, g).float(), conditions=net.one_hot(labels))


def _lr_at(cfg: ToyBenchConfig, step: int, total: int) -> float:
    """Linear warm-up, then cosine decay from lr to lr_final."""
    warm = max(1, int(cfg.warmup_frac * total))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    frac = (step - warm) / max(1, total - warm)
    return cfg.lr_final + 0.5 * (cfg.lr - cfg.lr_final) * (1 + math.cos(math.pi * frac))


class _Stepper:
    """One full training step (lr schedule, then the trainer's :func:`optimization_step`, then the
    EMA): the same code is timed for calibration and run for training."""

    def __init__(self, net: ToyVelocityNet, objective, cfg: ToyBenchConfig, flow: GaussianMixtureFlow, seed: int):
        self.net, self.objective, self.cfg, self.flow = net, objective, cfg, flow
        self.g = torch.Generator().manual_seed(seed)
        self.opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)
        self.ema = EMA(net, cfg.ema_decay)
        self.engine = LocalEngine(net, objective)

    def __call__(self, step: int) -> float:
        cfg = self.cfg
        batches = ((_batch(self.flow, self.net, cfg.batch_size, self.g), self.g) for _ in range(1))
        out = optimization_step(
            self.engine,
            batches,
            self.opt,
            step,
            lr=_lr_at(cfg, step, self.objective.total_steps),
            grad_clip=cfg.grad_clip,
        )
        self.ema.update(self.net)
        return out.loss


def _stepper(cfg: ToyBenchConfig, variant: Variant, seed: int, total: int) -> _Stepper:
    flow = GaussianMixtureFlow(cfg.mixture(seed))
    torch.manual_seed(seed)
    net = ToyVelocityNet(cfg.net)
    objective = build_objective(variant.objective, total, cfg.objective_config(variant))
    return _Stepper(net, objective, cfg, flow, seed + 2)


def calibrate(cfg: ToyBenchConfig, variants: tuple[Variant, ...]) -> dict[str, dict[str, float]]:
    """CPU ms per full training step and peak MB of one step, per variant, on throwaway networks with
    one thread. Variants are timed in interleaved rounds (one step of each per round), so load that
    comes and goes while calibrating falls on all of them alike and cancels in their ratios."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        probes = {v.label: _stepper(cfg, v, cfg.seeds[0], 1000) for v in variants}
        for probe in probes.values():
            for i in range(3):
                probe(i)
        spent = dict.fromkeys(probes, 0.0)
        for i in range(cfg.calibration_steps):
            for label, probe in probes.items():
                start = time.process_time()
                probe(i)
                spent[label] += time.process_time() - start
        return {
            label: {
                "cpu_ms_per_step": 1e3 * spent[label] / cfg.calibration_steps,
                "peak_mem_mb": peak_memory_mb(partial(probe, 0)),
            }
            for label, probe in probes.items()
        }
    finally:
        torch.set_num_threads(threads)


def plan_steps(cfg: ToyBenchConfig, variants: tuple[Variant, ...]) -> tuple[dict[str, int], dict[str, dict]]:
    """Steps per variant at equal CPU cost to ``vcm_steps`` of the first consistency variant (the
    reference), rounded to 10; fixed counts from ``cfg.steps`` win. Returns (steps, costs)."""
    costs = calibrate(cfg, variants)
    reference = next(v for v in variants if v.consistency)
    ref_cost = costs[reference.label]["cpu_ms_per_step"]
    fixed = dict(cfg.steps)
    steps = {}
    for v in variants:
        equal = cfg.vcm_steps * ref_cost / costs[v.label]["cpu_ms_per_step"]
        steps[v.label] = fixed.get(v.label) or max(10, int(round(equal / 10)) * 10)
    return steps, costs


def train_variant(
    cfg: ToyBenchConfig, variant: Variant, seed: int, total: int
) -> tuple[ToyVelocityNet, ToyVelocityNet]:
    """(raw, EMA) networks after ``total`` steps on mixture ``seed``."""
    stepper = _stepper(cfg, variant, seed, total)
    for step in range(total):
        stepper(step)
    return stepper.net.eval(), cast(ToyVelocityNet, stepper.ema.model.eval())


@torch.no_grad()
def sample_setting(model: ToyVelocityNet, variant: Variant, steps: int, labels, noise, cfg: ToyBenchConfig):
    prepared = model.prepare(model.one_hot(labels))
    if not variant.consistency:
        options = EulerOptions(steps, cfg_scale=cfg.guidance_scale, guidance_t_max=cfg.guidance_t_max)
        return sample(model, noise, prepared, options, model.prepare_null(labels.shape[0]))
    return sample(model, noise, prepared, ConsistencyOptions(steps))


@torch.no_grad()
def average_velocity_mse(model: ToyVelocityNet, held_out: dict[str, torch.Tensor]) -> float:
    """MSE of u_theta(x, t, s) against the exact guided average velocity (mean over rows and D)."""
    prepared = model.prepare(model.one_hot(held_out["labels"]))
    pred = model(held_out["x"].float(), held_out["t"].float(), held_out["s"].float(), prepared)
    return (pred.double() - held_out["u"]).square().mean().item()


def held_out_points(cfg: ToyBenchConfig, flow: GaussianMixtureFlow, seed: int) -> dict[str, torch.Tensor]:
    """(x_t, t, s, c) with s < t drawn as in training, and the exact guided u(x_t, t, s | c)."""
    g = torch.Generator().manual_seed(seed + 100)
    n = cfg.mse_points
    labels = torch.randint(0, cfg.num_classes, (n,), generator=g)
    t, s = TimeSampling(equal_ratio=0.0).sample(n, g)
    x0 = flow.sample_data(labels, g)
    x = interpolate(x0, torch.randn(x0.shape, generator=g, dtype=torch.float64), t.double())
    u = flow.average_velocity(x, t.double(), s.double(), labels, cfg.guidance, cfg.ode_steps)
    return {"x": x, "t": t, "s": s, "labels": labels, "u": u}


def evaluation_set(cfg: ToyBenchConfig, seed: int) -> dict[str, Any]:
    """Exact target samples, a second exact set (the floor), noise and labels for mixture ``seed``."""
    flow = GaussianMixtureFlow(cfg.mixture(seed))
    labels = flow.balanced_labels(cfg.eval_per_class)
    g = torch.Generator().manual_seed(seed + 10)
    target = flow.target_samples(labels, cfg.guidance, g, cfg.ode_steps).float()
    second = flow.target_samples(labels, cfg.guidance, g, cfg.ode_steps).float()
    noise = initial_noise((labels.shape[0], cfg.dim), seed=seed + 20)
    return {
        "flow": flow,
        "labels": labels,
        "target": target,
        "noise": noise,
        "floor": classwise_sw2(second, target, labels, seed=seed),
    }


def run_job(cfg: ToyBenchConfig, variant: Variant, seed: int, total: int, keep_samples: bool = False) -> dict:
    """Train one variant on one mixture and score it: one unit of work for a worker process."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same arithmetic whatever the number of workers
    try:
        return _run_job(cfg, variant, seed, total, keep_samples)
    finally:
        torch.set_num_threads(threads)


def _run_job(cfg: ToyBenchConfig, variant: Variant, seed: int, total: int, keep_samples: bool) -> dict:
    start = time.process_time()
    raw, ema = train_variant(cfg, variant, seed, total)
    train_cpu = time.process_time() - start
    # a variant with another guidance scale learns another field: score it against that field's
    # exact endpoints (and average velocities), not the base scale's
    scale = dict(variant.changes).get("guidance.scale")
    cfg = cfg if scale is None else replace(cfg, guidance_scale=scale)
    ev = evaluation_set(cfg, seed)
    out: dict[str, Any] = {
        "label": variant.label,
        "seed": seed,
        "steps": total,
        "train_cpu_s": train_cpu,
        "floor": ev["floor"],
        "sw2": {},
        "sw2_raw": {},
        "samples": {},
    }
    for key, n in variant.settings().items():
        x = sample_setting(ema, variant, n, ev["labels"], ev["noise"], cfg)
        out["sw2"][key] = classwise_sw2(x, ev["target"], ev["labels"], seed=seed)
        raw_x = sample_setting(raw, variant, n, ev["labels"], ev["noise"], cfg)
        out["sw2_raw"][key] = classwise_sw2(raw_x, ev["target"], ev["labels"], seed=seed)
        if keep_samples:
            out["samples"][key] = x
    if variant.consistency:
        out["avg_velocity_mse"] = average_velocity_mse(ema, held_out_points(cfg, ev["flow"], seed))
    return out


def _star(args):
    return run_job(*args)


def run_variants(cfg: ToyBenchConfig, variants: tuple[Variant, ...], desc: str = "toy") -> dict[str, Any]:
    """Calibrate, train every (variant, seed) in worker processes, and aggregate over seeds."""
    steps, costs = plan_steps(cfg, variants)
    jobs = [
        (cfg, v, seed, steps[v.label], seed == cfg.seeds[0] and cfg.dim == 2) for v in variants for seed in cfg.seeds
    ]
    results: list[dict] = []
    bar = tqdm(total=len(jobs), desc=f"{desc} (d={cfg.dim}, {len(cfg.seeds)} seeds)", unit="job", leave=False)
    start = time.perf_counter()
    if cfg.workers > 1 and len(jobs) > 1:
        with mp.get_context("spawn").Pool(min(cfg.workers, len(jobs))) as pool:
            for r in pool.imap_unordered(_star, jobs):
                results.append(r)
                bar.update()
    else:
        for job in jobs:
            results.append(run_job(*job))
            bar.update()
    bar.close()
    order = {(v.label, s): i for i, (_, v, s, _, _) in enumerate(jobs)}
    results.sort(key=lambda r: order[(r["label"], r["seed"])])
    return {
        "config": asdict(cfg),
        "variants": [asdict(v) for v in variants],
        "steps": steps,
        "costs": costs,
        "jobs": results,
        "summary": summarise(results),
        "wall_s": time.perf_counter() - start,
        "workers": cfg.workers,
    }


def scatter_plot(path: Path, result: dict[str, Any], cfg: ToyBenchConfig) -> Path | None:
    """PNG grid for the first seed (d = 2): class data, exact guided target, each sampler's samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seed = cfg.seeds[0]
    jobs = [r for r in result["jobs"] if r["seed"] == seed and r.get("samples")]
    if not jobs or cfg.dim != 2:
        return None
    ev = evaluation_set(cfg, seed)
    labels = ev["labels"]
    data = ev["flow"].sample_data(labels, torch.Generator().manual_seed(seed + 30)).float()
    panels = [("data x0 (unguided)", data), ("exact guided target", ev["target"])]
    panels += [(f"{k}  SW2={r['sw2'][k]:.3f}", x) for r in jobs for k, x in r["samples"].items()]
    cols = 6
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    lim = float(ev["target"].abs().max()) * 1.15
    for ax, (title, pts) in zip(axes.flat, panels):
        ax.scatter(pts[:, 0], pts[:, 1], c=labels, cmap="tab10", s=1, vmin=0, vmax=9)
        ax.set_title(title, fontsize=8)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(tmp, dpi=70)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def run_toy_bench(cfg: ToyBenchConfig, out_dir: Path | None = None, variants=MAIN_VARIANTS) -> dict[str, Any]:
    """FM, VCM and MeanFlow (and their split-p variants) at equal cost over ``cfg.seeds``."""
    result = run_variants(cfg, variants)
    if out_dir is not None:
        plot = scatter_plot(Path(out_dir) / f"toy_d{cfg.dim}_samples.png", result, cfg)
        if plot is not None:
            result["plot"] = str(plot)
    result["table"] = markdown_tables(result)
    result["goals"] = goals_table(result)
    result["torch_threads_per_job"] = 1
    return result


def run_ablation(cfg: ToyBenchConfig) -> dict[str, Any]:
    """Table 2's r, p, m and w for VCM (plus p on the t = s rows), one change at a time."""
    result = run_variants(cfg, ABLATION_VARIANTS, desc="ablation")
    result["table"] = markdown_tables(result)
    result["ablation"] = True
    return result


def public(result: dict[str, Any]) -> dict[str, Any]:
    """The JSON-serialisable part of a result (drops sample tensors)."""
    out = dict(result)
    out["jobs"] = [{k: v for k, v in r.items() if k != "samples"} for r in result.get("jobs", [])]
    return out


def write_json(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(public(result), indent=2, sort_keys=True))
    os.replace(tmp, path)


def config_from_json(path: Path) -> tuple[ToyBenchConfig, bool]:
    """The config of an earlier ``--json`` result with its step counts fixed, and whether it was an ablation."""
    try:
        data = json.loads(Path(path).read_text())
        raw = dict(data["config"])
        steps = dict(data["steps"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a toy-benchmark JSON result ({exc})") from exc
    raw["steps"] = tuple(sorted(steps.items()))
    raw["seeds"] = tuple(raw["seeds"])
    known = {f for f in ToyBenchConfig.__dataclass_fields__}
    return ToyBenchConfig(**{k: v for k, v in raw.items() if k in known}), bool(data.get("ablation"))


__all__ = [
    "ABLATION_VARIANTS",
    "MAIN_VARIANTS",
    "QUICK",
    "ToyBenchConfig",
    "Variant",
    "config_from_json",
    "run_ablation",
    "run_toy_bench",
    "run_variants",
    "write_json",
]
