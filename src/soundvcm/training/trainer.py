"""``soundvcm train``: one explicit training loop for flow matching, VCM and MeanFlow.

Per step (all randomness comes from generators keyed on (seed, step, global micro-batch), so a
run is reproducible, resumes exactly, and R ranks x A accumulation steps see the same rows and
noise as one process with R*A accumulation steps):

    for each micro-batch: rows from the mixed caches -> x0 = mean + std eps -> objective.loss
                          -> (loss / A).backward()
    all-reduce gradients (mean over ranks) and the "finite" flag; a NaN/inf loss skips the step
    clip to 1.0 -> AdamW -> LR schedule -> post-hoc EMA update   (training/step.py: the one step)
    log (progress bar: loss, steps/s, ETA, loss by t bucket; TensorBoard), validation loss at fixed
    t, EMA samples (audio + spectrogram), atomic checkpoints (weights, optimizer, EMA, RNG, step)

Data parallelism runs under ``torchrun`` (NCCL on GPU, gloo on CPU, single or multi node): the
gradient all-reduce is explicit rather than through the DDP wrapper, so objectives that call the
network several times per step or through ``torch.func.jvp`` (MeanFlow) work unchanged.
Precision: bf16 autocast on GPU (no GradScaler; MMAudio issue #49), fp32 on CPU.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from soundvcm.data.mixing import MixedSource, step_generator
from soundvcm.network.checkpoint import config_to_dict
from soundvcm.network.mmdit import MMDiT
from soundvcm.objectives import build_objective
from soundvcm.spec import ModelSpec, preset_for_encoders
from soundvcm.training.checkpoint import (
    clean_stale,
    latest_checkpoint,
    load_checkpoint,
    read_checkpoint_doc,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from soundvcm.training.config import FIXED_ON_RESUME, TrainConfig, config_dict, config_from_dict
from soundvcm.training.export import export_ema_checkpoint
from soundvcm.training.finetune import add_lora, freeze_except, load_init
from soundvcm.training.posthoc_ema import PostHocEMA
from soundvcm.training.progress import ProgressLog
from soundvcm.training.step import optimization_step

T_BUCKETS = (0.0, 0.25, 0.5, 0.75, 1.0001)
VAL_TIMES = (0.1, 0.3, 0.5, 0.7, 0.9)


class TrainingAborted(RuntimeError):
    """Too many consecutive non-finite losses."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT): the run stopped at a step boundary and saved ``checkpoint``."""

    def __init__(self, step: int, checkpoint: Path | None):
        super().__init__(f"interrupted at step {step}")
        self.step, self.checkpoint = step, checkpoint


def dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


class Trainer:
    def __init__(
        self,
        config: TrainConfig,
        data: list[str],
        out: Path,
        device: str = "auto",
        resume: bool = False,
        decoder=None,
        allow_mixed_encoders: bool = False,
        init: str | Path | None = None,
    ):
        """``decoder``: the encoder set used to turn EMA samples into audio (default: loaded by name).
        ``allow_mixed_encoders``: train on caches extracted with different encoder weight files.
        ``init``: a soundvcm checkpoint (or a shipped model's name) whose weights a *new* run starts
        from, latent statistics included; any objective can continue it (fine-tuning)."""
        self.config, self.out = config, Path(out)
        self.decoder = decoder
        self._setup_processes(device)
        self.data = MixedSource.open(data, allow_mixed_encoders)
        torch.manual_seed(config.seed)
        net_config = self._network_config()
        self.init = init
        if init is not None:  # the source's own network config (MMAudio's time convention included)
            self.net = load_init(init, self.encoder_set, net_config.sequence.duration).to(self.device)
        else:
            self.net = MMDiT(net_config).to(self.device)
        self._adapt()
        bf16 = config.precision == "bf16" or (config.precision == "auto" and self.device.type == "cuda")
        self.autocast = torch.bfloat16 if bf16 else None
        self.objective = build_objective(
            config.objective, config.steps, replace(config.objective_config(), autocast_dtype=self.autocast)
        )
        self.spec = ModelSpec.create(config.network, self.encoder_set, config.objective, self.objective.config)
        # the compiled module proxies prepare/null_conditions/normalize to the network
        self.model = torch.compile(self.net) if config.compile else self.net
        params = [p for p in self.net.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay,
                                           eps=config.eps, fused=self.device.type == "cuda")  # fmt: skip
        self.ema = PostHocEMA(self.net, config.ema_sigma_rels, config.ema_snapshot_every, self.out / "ema")
        self.step = self.nonfinite = self.skipped = 0
        self.history: list[dict[str, float]] = []
        self._start_or_resume(resume, init)
        self.writer: Any = None  # TensorBoard's SummaryWriter on rank 0 while fitting

    def _setup_processes(self, device: str) -> None:
        """Rank, device, process group and the per-rank micro-batch size."""
        config = self.config
        self.rank, self.world, local = dist_info()
        if device == "auto":
            device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda was given, but no CUDA GPU is available; use --device cpu or auto")
        if self.rank == 0:  # what a killed run left half-written
            for folder in (self.out / "checkpoints", self.out / "ema"):
                clean_stale(folder)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        per_rank = config.batch_size // (self.world * config.accumulation)
        if per_rank * self.world * config.accumulation != config.batch_size:
            raise ValueError(
                f"batch_size {config.batch_size} is not divisible by ranks x accumulation "
                f"({self.world} x {config.accumulation})"
            )
        self.micro = per_rank

    def _network_config(self):
        """The preset sized for the caches' encoder set and clip length, checked against them."""
        meta = self.data.meta
        net_config, self.encoder_set = preset_for_encoders(self.config.network, meta.encoder_set)
        net_config = replace(net_config, sequence=replace(net_config.sequence, duration=meta.duration))
        seq = net_config.sequence
        lengths = {"latent": (seq.latent_seq_len, meta.latent_shape[0]), "clip": (seq.clip_seq_len, meta.clip_shape[0]),
                   "sync": (seq.sync_seq_len, meta.sync_shape[0])}  # fmt: skip
        bad = {k: v for k, v in lengths.items() if v[0] != v[1]}
        if bad:
            raise ValueError(
                f"the caches' sequence lengths do not fit a {meta.duration} s network: {bad} (network, cache)"
            )
        return net_config

    def _start_or_resume(self, resume: bool, init) -> None:
        checkpoint = latest_checkpoint(self.out / "checkpoints") if resume else None
        if resume and checkpoint is None and self.rank == 0:
            print(f"soundvcm: no checkpoint in {self.out}/checkpoints; starting a new run", file=sys.stderr)
        if checkpoint is not None:
            self._restore(checkpoint)
        elif (self.out / "checkpoints" / "latest").exists():
            raise ValueError(f"{self.out} already holds a run; pass --resume to continue it or choose another --out")
        elif init is None:
            self._set_latent_stats()

    def _adapt(self) -> None:
        """Fine-tuning: LoRA adapters and/or the trainable subset (training/finetune.py)."""
        cfg = self.config
        if cfg.lora_rank:
            add_lora(self.net, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets)
        if cfg.trainable:
            freeze_except(self.net, cfg.trainable)

    # ----- setup ---------------------------------------------------------------------------
    @torch.no_grad()
    def _set_latent_stats(self) -> None:
        """Per-channel mean/std of posterior means over some rows (MMAudio's latent normalisation)."""
        g = torch.Generator().manual_seed(self.config.seed)
        rows = min(self.config.latent_stats_rows, sum(len(c) for c in self.data.caches))
        picks = self.data.draw(max(rows, 2), g)
        # every cache's row() refuses NaN/inf, so one bad row cannot poison the statistics
        means = torch.cat([self.data.caches[s].row(i)["mean"].float() for s, i in picks])
        self.net.latent_mean.copy_(means.mean(0).view(1, 1, -1))
        self.net.latent_std.copy_(means.std(0).clamp(min=1e-3).view(1, 1, -1))

    def _restore(self, path: Path) -> None:
        net, optimizer, ema, doc = load_checkpoint(path)
        saved, ours = config_dict(config_from_dict(doc["config"])), config_dict(self.config)  # older runs: defaults
        for key in FIXED_ON_RESUME:
            if _plain(saved[key]) != _plain(ours[key]):
                raise ValueError(
                    f"{path}: the run used {key}={saved[key]}, not {ours[key]}; it cannot change on resume"
                )
        self.net.load_state_dict(net, strict=True)
        self.optimizer.load_state_dict(optimizer)
        self.ema.load_state_dict(ema)
        self.step, self.nonfinite, self.skipped = doc["step"], doc["nonfinite"], doc["skipped"]
        self.history = doc.get("history", [])
        set_rng_state(doc["rng"])

    # ----- one step ------------------------------------------------------------------------
    def _micro_batches(self):
        """This rank's micro-batches of the step, each with its objective generator (keyed on
        seed, step and global micro-batch index, so runs resume and scale bit-for-bit)."""
        cfg = self.config
        for micro in range(cfg.accumulation):
            global_micro = self.rank * cfg.accumulation + micro
            g = step_generator(cfg.seed, self.step, global_micro, 0, "data")
            batch = self.data.batch(self.net, self.micro, g, self.device)
            g_obj = step_generator(cfg.seed, self.step, global_micro, 0, "objective")
            if self.device.type == "cuda":
                g_obj = torch.Generator(device=self.device).manual_seed(int(g_obj.initial_seed()))
            yield batch, g_obj

    def _all_reduce(self, params: list, finite: bool) -> bool:
        """Average gradients over ranks; True only if every rank's loss was finite."""
        flag = torch.tensor([1.0 if finite else 0.0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([gr.flatten() for gr in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p, gr in zip(params, grads):
            p.grad = flat[offset : offset + gr.numel()].view_as(gr).clone()
            offset += gr.numel()
        return flag.item() == 1

    def train_step(self) -> dict[str, Any]:
        cfg = self.config
        self.net.train()
        lr = cfg.lr * cfg.schedule(self.step)
        out = optimization_step(
            self.model, self.objective, self._micro_batches(), self.optimizer, self.step, lr=lr,
            grad_clip=cfg.grad_clip, accumulation=cfg.accumulation, reduce=self._all_reduce if self.world > 1 else None,
        )  # fmt: skip
        if not out.finite:
            return self._skip(lr)
        mean_loss = out.loss
        if self.world > 1:  # the logged loss is the mean over ranks, not rank 0's alone
            loss_sum = torch.tensor([mean_loss], device=self.device)
            dist.all_reduce(loss_sum)
            mean_loss = float(loss_sum) / self.world
        self.nonfinite = 0
        self.ema.update(self.net)
        self.step += 1
        record = {"loss": mean_loss, "lr": lr, "grad_norm": out.grad_norm, "skipped": 0}
        for lo, hi in zip(T_BUCKETS[:-1], T_BUCKETS[1:]):
            mask = (out.t >= lo) & (out.t < hi)
            if mask.any():
                record[f"loss_t{lo:.2f}-{min(hi, 1):.2f}"] = float(out.mse[mask].mean())
        return record

    def _skip(self, lr: float) -> dict[str, Any]:
        self.nonfinite += 1
        self.skipped += 1
        if self.rank == 0:
            tqdm.write(f"soundvcm: step {self.step}: non-finite loss, step skipped ({self.nonfinite} in a row)")
        if self.nonfinite >= self.config.max_nonfinite:
            raise TrainingAborted(
                f"{self.nonfinite} consecutive non-finite losses at step {self.step}; "
                f"lower the learning rate or check the data (last checkpoint: {self.out}/checkpoints)"
            )
        self.step += 1
        return {"loss": float("nan"), "lr": lr, "skipped": 1}

    # ----- validation, samples, checkpoints ------------------------------------------------
    @torch.no_grad()
    def validation_loss(self) -> dict[str, float]:
        """Flow-matching MSE of u(x_t, t, t) at fixed t on fixed rows and noise (comparable across runs)."""
        net = self.net
        net.eval()
        g = step_generator(self.config.seed, -1, 0, 0, "validation")
        batch = self.data.batch(net, self.config.val_batch, g, self.device)
        prepared = net.prepare(batch.conditions)
        eps = torch.randn(batch.x0.shape, generator=g).to(self.device)
        out = {}
        for t_val in VAL_TIMES:
            t = torch.full((batch.x0.shape[0],), t_val, device=self.device)
            x_t = (1 - t_val) * batch.x0 + t_val * eps
            u = net(x_t, t, t, prepared).float()
            out[f"val_t{t_val:.1f}"] = float((u - (eps - batch.x0)).square().mean())
        out["val"] = sum(out.values()) / len(out)
        return out

    def checkpoint(self) -> Path:
        doc = {
            "config": config_dict(self.config),
            "encoder_set": self.encoder_set,
            "spec": self.spec.to_dict(),
            "network_config": config_to_dict(self.net.config),
            "nonfinite": self.nonfinite,
            "skipped": self.skipped,
            "rng": rng_state(),
            "history": self.history[-1000:],
        }
        state = (self.net.state_dict(), self.optimizer.state_dict(), self.ema.state_dict())
        return save_checkpoint(self.out / "checkpoints", self.step, *state, doc, self.config.keep_checkpoints)

    def samples(self) -> list[Path]:
        from soundvcm.training.samples import write_samples

        return write_samples(self, self.out / "samples" / f"step_{self.step:09d}")

    def export_ema(self, sigma_rel: float | None = None) -> Path:
        """Synthesise the EMA at sigma_rel from the snapshots and save it as a soundvcm checkpoint."""
        self.ema.snapshot()
        path, _ = export_ema_checkpoint(
            self.out, sigma_rel or self.config.ema_export_sigma_rel, self.step, self.net.config, self.spec
        )
        return path

    # ----- the loop ------------------------------------------------------------------------
    def fit(self, steps: int | None = None) -> list[dict[str, float]]:
        """Train to ``config.steps`` (or ``steps`` more). Ctrl-C finishes the current step, saves a
        checkpoint and raises :class:`TrainingInterrupted`; a second Ctrl-C stops at once."""
        self._stop_requested = False
        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, self._on_sigint) if main_thread else None
        try:
            return self._fit(steps)
        finally:
            if main_thread:
                signal.signal(signal.SIGINT, previous)

    def _on_sigint(self, signum, frame) -> None:
        if self._stop_requested:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now; the last checkpoint stays as it was
        self._stop_requested = True
        if self.rank == 0:
            tqdm.write("soundvcm: interrupted: finishing this step, then saving a checkpoint (Ctrl-C again: stop now)")

    def _stop_now(self) -> bool:
        """True on every rank when any rank was asked to stop (checked at step boundaries only)."""
        if self.world == 1:
            return self._stop_requested
        flag = torch.tensor([1.0 if self._stop_requested else 0.0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def _fit(self, steps: int | None) -> list[dict[str, float]]:
        cfg = self.config
        end = min(cfg.steps, self.step + steps) if steps is not None else cfg.steps
        main = self.rank == 0
        if main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "tb"), purge_step=self.step)
        bar = tqdm(total=end, initial=self.step, desc="train", unit="step", disable=not main, file=sys.stderr)
        log = ProgressLog(bar, self.step)
        try:
            while self.step < end:
                record = self.train_step()
                record["step"] = self.step
                self.history.append({"step": self.step, "loss": record["loss"]})
                if main:
                    log.add(record, self.writer if self.step % cfg.log_every == 0 or self.step == end else None)
                    self._periodic(end)
                if self.world > 1:
                    dist.barrier()
                if self._stop_now():  # a step boundary: the state is consistent, save and stop
                    raise TrainingInterrupted(self.step, self._save_for_stop() if main else None)
        finally:  # the bar ends its line whatever stops the loop, so messages start on their own
            bar.close()
        if main:
            self.writer.flush()
            if self.step >= cfg.steps:
                path = self.export_ema()
                tqdm.write(f"final EMA weights (sigma_rel {cfg.ema_export_sigma_rel}): {path}")
        return self.history

    def _periodic(self, end: int) -> None:
        """Validation, samples and checkpoints on their schedules (rank 0)."""
        cfg = self.config
        if cfg.val_every and self.step % cfg.val_every == 0:
            for k, v in self.validation_loss().items():
                self.writer.add_scalar(f"val/{k}", v, self.step)
        if cfg.sample_every and self.step % cfg.sample_every == 0:
            self.samples()
        if cfg.checkpoint_every and (self.step % cfg.checkpoint_every == 0 or self.step == end):
            self.checkpoint()

    def _save_for_stop(self) -> Path:
        """This step's checkpoint: the periodic one if it was just written, else a new one."""
        saved = latest_checkpoint(self.out / "checkpoints")
        path = saved if saved is not None and read_checkpoint_doc(saved)["step"] == self.step else self.checkpoint()
        self.writer.flush()
        return path


def _plain(value):
    """Lists (JSON) and tuples (configs) compare equal."""
    return list(value) if isinstance(value, (list, tuple)) else value
