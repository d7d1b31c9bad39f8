"""``soundvcm bench toy``: flow matching, velocity consistency and MeanFlow on exact flows.

The same small network (:class:`~soundvcm.network.toy.ToyVelocityNet`) is trained with each
objective for the same wall-clock budget on a class-conditional Gaussian mixture whose guided
flow is known exactly (:mod:`soundvcm.analytic`). All three aim at one target: the endpoint of
the exact ODE under the guidance rule the models learn (scale w where t <= 0.8, the conditional
field above); the flow-matching baseline samples with that same rule.

Reported: sliced W2 to exact target samples per sampler setting (EMA and raw weights), the MSE
of u(x, t, s) against the exact average velocity on held-out (x, t, s), and each objective's
training step time and peak memory, all measured in the same run.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from soundvcm.analytic import GaussianMixtureFlow, Guidance, MixtureSpec, classwise_sw2
from soundvcm.bench.measure import peak_memory_mb
from soundvcm.flow import interpolate
from soundvcm.network.toy import ToyNetConfig, ToyVelocityNet
from soundvcm.objectives import (
    OBJECTIVE_PRESETS,
    Batch,
    TimeSampling,
    TrainingGuidance,
    VelocityConsistencyConfig,
    build_objective,
)
from soundvcm.sampling import consistency_sample, euler_cfg_sample, initial_noise
from soundvcm.training.ema import EMA

SAMPLER_SETTINGS: dict[str, tuple[str, int]] = {
    # key -> (objective, steps); fm@N counts N network evaluations (steps x 2 with CFG)
    "vcm@1": ("vcm", 1),
    "vcm@2": ("vcm", 2),
    "vcm@4": ("vcm", 4),
    "meanflow@1": ("meanflow", 1),
    "meanflow@2": ("meanflow", 2),
    "meanflow@4": ("meanflow", 4),
    "fm@4": ("fm", 2),
    "fm@8": ("fm", 4),
    "fm@50": ("fm", 25),
}


@dataclass(frozen=True)
class ToyBenchConfig:
    """Everything the toy benchmark depends on; one seed makes it reproducible."""

    dim: int = 2
    budget_s: float = 150.0
    batch_size: int = 256
    lr: float = 3e-3
    lr_final: float = 1e-4
    warmup_frac: float = 0.02
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    width: int = 64
    depth: int = 4
    num_classes: int = 4
    components_per_class: int = 2
    std: float = 0.15
    guidance_scale: float = 4.0
    guidance_t_max: float = 0.8
    mix: float = 0.25
    # p of the adaptive weight (Eq. 11) for VCM and MeanFlow; the paper's 1.0 by default. At very
    # low D the per-row MSE is a noisy chi-square and 1 / MSE weighting pulls towards the mode of
    # the target (see BENCHMARKS.md); --adaptive-p 0 compares both methods without it.
    adaptive_p: float = 1.0
    eval_per_class: int = 1000
    mse_points: int = 2000
    ode_steps: int = 256
    seed: int = 0
    calibration_steps: int = 30
    # Fixed step counts per objective label (e.g. (("fm", 3000), ...)) instead of the wall-clock
    # calibration; with them a run is bit-reproducible (``--replay`` reads them from a JSON).
    steps: tuple[tuple[str, int], ...] = ()

    @property
    def mixture(self) -> MixtureSpec:
        return MixtureSpec(self.dim, self.num_classes, self.components_per_class, self.std, seed=self.seed)

    @property
    def guidance(self) -> Guidance:
        return Guidance(self.guidance_scale, self.guidance_t_max)

    @property
    def net(self) -> ToyNetConfig:
        return ToyNetConfig(dim=self.dim, num_classes=self.num_classes, width=self.width, depth=self.depth)

    def objective_config(self, name: str) -> Any:
        """The preset config with this bench's guidance (scale, window, m)."""
        base = OBJECTIVE_PRESETS[name].config
        if not hasattr(base, "guidance"):
            return base
        g = TrainingGuidance(scale=self.guidance_scale, t_max=self.guidance_t_max, mix=self.mix)
        return replace(base, guidance=g, adaptive_p=self.adaptive_p)


QUICK = dict(budget_s=6.0, eval_per_class=250, mse_points=400, ode_steps=96, calibration_steps=8)


@dataclass
class TrainedModel:
    name: str
    net: ToyVelocityNet
    ema: ToyVelocityNet
    steps: int
    step_time_s: float
    train_wall_s: float
    peak_mem_mb: float
    final_loss: float
    extras: dict[str, float] = field(default_factory=dict)


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
    """One full training step (lr schedule, loss, backward, clipping, AdamW, EMA): the same code
    is timed for calibration and run for training, so calibrated budgets match wall-clock."""

    def __init__(self, net: ToyVelocityNet, objective, cfg: ToyBenchConfig, flow: GaussianMixtureFlow, seed: int):
        self.net, self.objective, self.cfg, self.flow = net, objective, cfg, flow
        self.g = torch.Generator().manual_seed(seed)
        self.opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)
        self.ema = EMA(net, cfg.ema_decay)

    def __call__(self, step: int) -> float:
        cfg = self.cfg
        for group in self.opt.param_groups:
            group["lr"] = _lr_at(cfg, step, self.objective.total_steps)
        out = self.objective.loss(self.net, _batch(self.flow, self.net, cfg.batch_size, self.g), step, self.g)
        self.opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.grad_clip)
        self.opt.step()
        self.ema.update(self.net)
        return out.loss.item()


def train_objective(
    name: str, cfg: ToyBenchConfig, flow: GaussianMixtureFlow, objective_config: Any = None, label: str | None = None
) -> TrainedModel:
    """Train one objective for ``cfg.budget_s`` seconds of wall-clock (calibrated step count)."""
    objective_config = objective_config if objective_config is not None else cfg.objective_config(name)
    torch.manual_seed(cfg.seed)
    net = ToyVelocityNet(cfg.net)

    # Calibrate the full step on a throwaway copy so every objective gets the same wall-clock.
    probe = _Stepper(copy.deepcopy(net), build_objective(name, 1000, objective_config), cfg, flow, cfg.seed + 1)
    for i in range(3):
        probe(i)
    start = time.perf_counter()
    for i in range(cfg.calibration_steps):
        probe(i)
    calibrated = (time.perf_counter() - start) / cfg.calibration_steps
    peak = peak_memory_mb(lambda: probe(0))
    total = dict(cfg.steps).get(label or name) or max(20, int(cfg.budget_s / calibrated))

    stepper = _Stepper(net, build_objective(name, total, objective_config), cfg, flow, cfg.seed + 2)
    # Long runs step slower than the short calibration, so the step count is re-estimated from
    # the measured throughput at 10 % and 40 % of training (schedules follow the new total).
    # With fixed steps (cfg.steps, --replay) nothing is re-estimated and runs are bit-identical.
    checkpoints = set() if dict(cfg.steps).get(label or name) else {total // 10, (2 * total) // 5}
    losses: list[float] = []
    bar = tqdm(total=total, desc=f"train {label or name} (d={cfg.dim})", leave=False, mininterval=1.0)
    start = time.perf_counter()
    step = 0
    while step < stepper.objective.total_steps:
        losses.append(stepper(step))
        step += 1
        bar.update()
        if step in checkpoints:
            elapsed = time.perf_counter() - start
            remaining = max(0.0, cfg.budget_s - elapsed)
            stepper.objective.total_steps = max(step + 1, step + int(remaining * step / elapsed))
            bar.total = stepper.objective.total_steps
        if step % 50 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
    bar.close()
    total = step
    wall = time.perf_counter() - start
    tail = losses[-max(1, total // 20) :]
    return TrainedModel(
        name=label or name,
        net=net.eval(),
        ema=stepper.ema.model.eval(),
        steps=total,
        step_time_s=wall / total,
        train_wall_s=wall,
        peak_mem_mb=peak,
        final_loss=sum(tail) / len(tail),
    )


@torch.no_grad()
def sample_setting(
    model: ToyVelocityNet, kind: str, steps: int, labels: torch.Tensor, noise: torch.Tensor, cfg
) -> torch.Tensor:
    prepared = model.prepare(model.one_hot(labels))
    if kind == "fm":
        return euler_cfg_sample(
            model,
            noise,
            prepared,
            model.prepare_null(labels.shape[0]),
            steps=steps,
            cfg_scale=cfg.guidance_scale,
            guidance_t_max=cfg.guidance_t_max,
        )
    return consistency_sample(model, noise, prepared, steps=steps)


@torch.no_grad()
def average_velocity_mse(model: ToyVelocityNet, held_out: dict[str, torch.Tensor]) -> float:
    """MSE of u_theta(x, t, s) against the exact guided average velocity (mean over rows and D)."""
    pred = model(
        held_out["x"].float(),
        held_out["t"].float(),
        held_out["s"].float(),
        model.prepare(model.one_hot(held_out["labels"])),
    )
    return (pred.double() - held_out["u"]).square().mean().item()


def held_out_points(cfg: ToyBenchConfig, flow: GaussianMixtureFlow) -> dict[str, torch.Tensor]:
    """(x_t, t, s, c) with s < t drawn as in training, and the exact guided u(x_t, t, s | c)."""
    g = torch.Generator().manual_seed(cfg.seed + 100)
    n = cfg.mse_points
    labels = torch.randint(0, cfg.num_classes, (n,), generator=g)
    t, s = TimeSampling(equal_ratio=0.0).sample(n, g)
    x0 = flow.sample_data(labels, g)
    x = interpolate(x0, torch.randn(x0.shape, generator=g, dtype=torch.float64), t.double())
    u = flow.average_velocity(x, t.double(), s.double(), labels, cfg.guidance, cfg.ode_steps)
    return {"x": x, "t": t, "s": s, "labels": labels, "u": u}


def evaluate(
    models: dict[str, TrainedModel], cfg: ToyBenchConfig, flow: GaussianMixtureFlow, settings=SAMPLER_SETTINGS
) -> dict[str, Any]:
    """SW2 per sampler setting (EMA and raw weights), floor, and average-velocity MSE."""
    labels = flow.balanced_labels(cfg.eval_per_class)
    g = torch.Generator().manual_seed(cfg.seed + 10)
    target = flow.target_samples(labels, cfg.guidance, g, cfg.ode_steps).float()
    second = flow.target_samples(labels, cfg.guidance, g, cfg.ode_steps).float()
    noise = initial_noise((labels.shape[0], cfg.dim), seed=cfg.seed + 20)
    sw2: dict[str, float] = {}
    sw2_raw: dict[str, float] = {}
    samples: dict[str, torch.Tensor] = {}
    for key, (kind, steps) in settings.items():
        if kind not in models:
            continue
        m = models[kind]
        samples[key] = sample_setting(m.ema, kind, steps, labels, noise, cfg)
        sw2[key] = classwise_sw2(samples[key], target, labels, seed=cfg.seed)
        raw = sample_setting(m.net, kind, steps, labels, noise, cfg)
        sw2_raw[key] = classwise_sw2(raw, target, labels, seed=cfg.seed)
    held = held_out_points(cfg, flow)
    mse = {k: average_velocity_mse(m.ema, held) for k, m in models.items()}
    return {
        "sw2": sw2,
        "sw2_raw": sw2_raw,
        "sw2_floor": classwise_sw2(second, target, labels, seed=cfg.seed),
        "avg_velocity_mse": mse,
        "_samples": samples,
        "_target": target,
        "_labels": labels,
    }


def scatter_plot(path: Path, flow: GaussianMixtureFlow, result: dict[str, Any], cfg: ToyBenchConfig) -> None:
    """PNG grid: class data, exact guided target, and each sampler's samples (d = 2 only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = result["_labels"]
    data = flow.sample_data(labels, torch.Generator().manual_seed(cfg.seed + 30)).float()
    panels = [("data x0 (unguided)", data), ("exact guided target", result["_target"])]
    panels += [(f"{k}  SW2={result['sw2'][k]:.3f}", v) for k, v in result["_samples"].items()]
    cols = 4
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4 * rows), squeeze=False)
    lim = float(result["_target"].abs().max()) * 1.15
    for ax, (title, pts) in zip(axes.flat, panels):
        ax.scatter(pts[:, 0], pts[:, 1], c=labels, cmap="tab10", s=2, vmin=0, vmax=9)
        ax.set_title(title, fontsize=10)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, path)


def markdown_tables(result: dict[str, Any], models: dict[str, TrainedModel]) -> str:
    lines = ["| sampler | NFE | SW2 (EMA) | SW2 (raw) |", "|---|---|---|---|"]
    for key, (kind, steps) in SAMPLER_SETTINGS.items():
        if key in result["sw2"]:
            nfe = f"{steps}x2" if kind == "fm" else str(steps)
            lines.append(f"| {key} | {nfe} | {result['sw2'][key]:.3f} | {result['sw2_raw'][key]:.3f} |")
    lines.append(f"| two exact sample sets (floor) | - | {result['sw2_floor']:.3f} | |")
    lines += ["", "| objective | steps | step time (ms) | vs fm | peak mem (MB) | avg-velocity MSE (EMA) |"]
    lines.append("|---|---|---|---|---|---|")
    fm_time = models["fm"].step_time_s if "fm" in models else float("nan")
    for k, m in models.items():
        lines.append(
            f"| {k} | {m.steps} | {1e3 * m.step_time_s:.2f} | {m.step_time_s / fm_time:.2f}x | "
            f"{m.peak_mem_mb:.2f} | {result['avg_velocity_mse'][k]:.4f} |"
        )
    return "\n".join(lines)


ABLATIONS: dict[str, dict[str, float]] = {
    "base (r=0.75, p=1, m=0.25)": {"adaptive_p": 1.0},
    "r=0": {"equal_ratio": 0.0, "adaptive_p": 1.0},
    "p=0": {"adaptive_p": 0.0},
    "m=0.75": {"mix": 0.75, "adaptive_p": 1.0},
}


def _ablation_config(cfg: ToyBenchConfig, change: dict[str, float]) -> VelocityConsistencyConfig:
    base: VelocityConsistencyConfig = cfg.objective_config("vcm")
    if "equal_ratio" in change:
        base = replace(base, time=replace(base.time, equal_ratio=change["equal_ratio"]))
    if "adaptive_p" in change:
        base = replace(base, adaptive_p=change["adaptive_p"])
    if "mix" in change:
        base = replace(base, guidance=replace(base.guidance, mix=change["mix"]))
    return base


def run_ablation(cfg: ToyBenchConfig) -> dict[str, Any]:
    """VCM with r in {0, 0.75}, p in {0, 1}, m in {0.25, 0.75}, one change at a time (Table 2)."""
    flow = GaussianMixtureFlow(cfg.mixture)
    rows: dict[str, Any] = {}
    settings = {k: v for k, v in SAMPLER_SETTINGS.items() if v[0] == "vcm"}
    for label, change in ABLATIONS.items():
        model = train_objective("vcm", cfg, flow, _ablation_config(cfg, change), label=label)
        res = evaluate({"vcm": model}, cfg, flow, settings)
        rows[label] = {"sw2": res["sw2"], "avg_velocity_mse": res["avg_velocity_mse"]["vcm"], "steps": model.steps}
    # the JSON keeps the config so --replay can rerun it
    lines = ["| variant | vcm@1 | vcm@2 | vcm@4 | avg-velocity MSE | steps |", "|---|---|---|---|---|---|"]
    for label, r in rows.items():
        s = r["sw2"]
        lines.append(
            f"| {label} | {s['vcm@1']:.3f} | {s['vcm@2']:.3f} | {s['vcm@4']:.3f} | "
            f"{r['avg_velocity_mse']:.4f} | {r['steps']} |"
        )
    return {"ablation": rows, "table": "\n".join(lines), "config": asdict(cfg)}


def run_toy_bench(cfg: ToyBenchConfig, out_dir: Path | None = None) -> dict[str, Any]:
    """Train fm, vcm and meanflow for equal wall-clock and evaluate them against exact flows."""
    flow = GaussianMixtureFlow(cfg.mixture)
    models = {name: train_objective(name, cfg, flow) for name in ("fm", "vcm", "meanflow")}
    result = evaluate(models, cfg, flow)
    if out_dir is not None and cfg.dim == 2:
        out_dir.mkdir(parents=True, exist_ok=True)
        scatter_plot(out_dir / "toy_d2_samples.png", flow, result, cfg)
        result["plot"] = str(out_dir / "toy_d2_samples.png")
    result["table"] = markdown_tables(result, models)
    result["step_time_s"] = {k: m.step_time_s for k, m in models.items()}
    result["peak_mem_mb"] = {k: m.peak_mem_mb for k, m in models.items()}
    result["train_steps"] = {k: m.steps for k, m in models.items()}
    result["train_wall_s"] = {k: m.train_wall_s for k, m in models.items()}
    result["config"] = asdict(cfg)
    result["torch_threads"] = torch.get_num_threads()
    return result


def public(result: dict[str, Any]) -> dict[str, Any]:
    """The JSON-serialisable part of a result (drops sample tensors)."""
    return {k: v for k, v in result.items() if not k.startswith("_")}


def write_json(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(public(result), indent=2, sort_keys=True))
    os.replace(tmp, path)


def config_from_json(path: Path) -> ToyBenchConfig:
    """The config of an earlier ``--json`` result, with its trained step counts fixed."""
    try:
        data = json.loads(Path(path).read_text())
        raw = dict(data["config"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a toy-benchmark JSON result ({exc})") from exc
    steps = data.get("train_steps") or {k: v["steps"] for k, v in data.get("ablation", {}).items()}
    raw["steps"] = tuple(sorted(steps.items()))
    known = {f for f in ToyBenchConfig.__dataclass_fields__}
    return ToyBenchConfig(**{k: v for k, v in raw.items() if k in known})
