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

Data parallelism runs under ``torchrun`` (NCCL on GPU, gloo on CPU, single or multi node) on
PyTorch's own engines (training/parallel.py): DistributedDataParallel by default (MeanFlow's
JVP included), FSDP2 with ``parallel="fsdp"`` (parameters, gradients, AdamW moments and EMA copies
sharded), or a flat all-reduce. Checkpoints hold whole tensors
and the number of ranks, so a run resumes on any world size (keeping ranks x accumulation, and
with it the rows and noise of every step, when the new world size divides it).
Precision (soundvcm.precision): bf16 autocast on GPU (no GradScaler; MMAudio issue #49) and on a CPU
with native bf16 where it measures faster; fp32 elsewhere.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from soundvcm.data.mixing import MixedSource, step_generator
from soundvcm.device import compile_module, dist_info
from soundvcm.network.checkpoint import config_to_dict
from soundvcm.network.mmdit import MMDiT
from soundvcm.network.protocol import autocast
from soundvcm.objectives import build_objective
from soundvcm.precision import resolve_precision
from soundvcm.spec import ModelSpec, network_for_cache
from soundvcm.training.checkpoint import (
    clean_stale,
    latest_checkpoint,
    load_checkpoint,
    read_checkpoint_doc,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from soundvcm.training.config import TrainConfig, config_dict
from soundvcm.training.export import export_ema_checkpoint
from soundvcm.training.finetune import add_lora, freeze_except, load_init
from soundvcm.training.interrupt import StopRequest, TrainingAborted, TrainingInterrupted
from soundvcm.training.parallel import (
    build_engine,
    full_optimizer_state,
    full_state,
    load_full_optimizer_state,
    resolve_engine,
)
from soundvcm.training.posthoc_ema import PostHocEMA
from soundvcm.training.progress import ProgressLog, loss_by_t
from soundvcm.training.resume import check_identity, fit_world
from soundvcm.training.step import optimization_step

__all__ = ["Trainer", "TrainingAborted", "TrainingInterrupted"]


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
        parallel: str = "auto",
    ):
        """``decoder``: the encoder set used to turn EMA samples into audio (default: loaded by name).
        ``allow_mixed_encoders``: train on caches extracted with different encoder weight files.
        ``init``: a soundvcm checkpoint (or a shipped model's name) whose weights a *new* run starts
        from, latent statistics included; any objective can continue it (fine-tuning).
        ``parallel``: auto (= ddp), ddp, fsdp or allreduce (several processes only)."""
        self.config, self.out, self.decoder, self.resume = config, Path(out), decoder, resume
        self.resume_from = latest_checkpoint(self.out / "checkpoints") if resume else None
        self._setup_processes(device)
        self.engine_name = resolve_engine(parallel, self.world)
        self.sharded = self.engine_name == "fsdp"
        self.saved_step = -1
        self.stop = StopRequest(self.rank, self.world, self.device)
        self.data = MixedSource.open(data, allow_mixed_encoders)
        torch.manual_seed(config.seed)
        net_config = self._network_config()
        self.init = init
        if init is not None:  # the source's own network config (MMAudio's time convention included)
            self.net = load_init(init, self.encoder_set, net_config.sequence.duration).to(self.device)
        else:
            self.net = MMDiT(net_config).to(self.device)
        self._adapt()
        # autocast: bf16 on a GPU or a native-bf16 CPU where faster (soundvcm.precision); recorded in checkpoints
        self.precision = resolve_precision(config.precision, self.device, ("train",))
        self.objective = build_objective(config.objective, config.steps, config.objective_config)
        self.spec = ModelSpec.create(
            config.network, self.encoder_set, config.objective, self.objective.config, self.net.config
        )
        saved = self._start_or_resume(init)  # whole weights go in before any sharding
        # the compiled module proxies prepare/null_conditions/normalize to the network
        compiled, note = compile_module(self.net, self.device) if config.compile else (self.net, None)
        if note and self.rank == 0:
            print(f"soundvcm: {note}", file=sys.stderr)
        self.model: Any = autocast(compiled, self.precision.dtype("train"))  # what the objective calls
        self.engine = build_engine(self.engine_name, self.net, self.model, self.objective, self.device)
        params = [p for p in self.net.parameters() if p.requires_grad]  # FSDP's sharded ones, if sharded
        self.optimizer = torch.optim.AdamW(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay,
                                           eps=config.eps, fused=self.device.type == "cuda")  # fmt: skip
        self.ema = PostHocEMA(self.net, config.ema_sigma_rels, config.ema_snapshot_every, self.out / "ema",
                              write=self.rank == 0)  # fmt: skip
        self.step = self.nonfinite = self.skipped = 0
        self.history: list[dict[str, float]] = []
        if saved is not None:
            self._restore_state(*saved)
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
        if self.resume_from is not None:
            config, note = fit_world(config, read_checkpoint_doc(self.resume_from).get("world", 1), self.world)
            self.config = config
            if note and self.rank == 0:
                print(f"soundvcm: {note}", file=sys.stderr)
        per_rank = config.batch_size // (self.world * config.accumulation)
        if per_rank * self.world * config.accumulation != config.batch_size:
            raise ValueError(
                f"batch_size {config.batch_size} is not divisible by ranks x accumulation "
                f"({self.world} x {config.accumulation})"
            )
        self.micro = per_rank

    def _network_config(self):
        """The preset sized for the caches' encoder set and clip length, checked against them."""
        net_config, self.encoder_set = network_for_cache(self.config.network, self.data.meta)
        return net_config

    def _start_or_resume(self, init) -> tuple | None:
        """A new run's latent statistics, or the saved run's network weights (loaded now, into the
        whole network) and its optimizer/EMA states (returned, loaded once those exist)."""
        checkpoint = self.resume_from
        if self.resume and checkpoint is None and self.rank == 0:
            print(f"soundvcm: no checkpoint in {self.out}/checkpoints; starting a new run", file=sys.stderr)
        if checkpoint is not None:
            return self._restore(checkpoint)
        if (self.out / "checkpoints" / "latest").exists():
            raise ValueError(f"{self.out} already holds a run; pass --resume to continue it or choose another --out")
        if init is None:
            self._set_latent_stats()
        return None

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
        mean, std = self.data.latent_stats(self.config.latent_stats_rows, self.config.seed)
        self.net.latent_mean.copy_(mean.view(1, 1, -1))
        self.net.latent_std.copy_(std.view(1, 1, -1))

    def _restore(self, path: Path) -> tuple:
        net, optimizer, ema, doc = load_checkpoint(path)
        check_identity(path, doc, self.config, self.world)
        self.net.load_state_dict(net, strict=True)
        return optimizer, ema, doc

    def _restore_state(self, optimizer: dict, ema: dict, doc: dict) -> None:
        load_full_optimizer_state(self.optimizer, optimizer)
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
            self.engine.before_batch()
            batch = self.data.batch(self.net, self.micro, g, self.device)
            g_obj = step_generator(cfg.seed, self.step, global_micro, 0, "objective")
            if self.device.type == "cuda":
                g_obj = torch.Generator(device=self.device).manual_seed(int(g_obj.initial_seed()))
            yield batch, g_obj

    def train_step(self) -> dict[str, Any]:
        cfg = self.config
        self.net.train()
        lr = cfg.lr * cfg.schedule(self.step)
        out = optimization_step(
            self.engine,
            self._micro_batches(),
            self.optimizer,
            self.step,
            lr=lr,
            grad_clip=cfg.grad_clip,
            accumulation=cfg.accumulation,
        )
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
        return {"loss": mean_loss, "lr": lr, "grad_norm": out.grad_norm, "skipped": 0, **loss_by_t(out.t, out.mse)}

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
    def validation_loss(self) -> dict[str, float]:
        """Flow-matching MSE of u(x_t, t, t) at fixed t on fixed rows and noise (with FSDP every
        rank calls this, to gather the network whole; rank 0 computes it, the others get {})."""
        from soundvcm.training.samples import validation_loss

        net = self._whole_network()
        return validation_loss(self, net) if net is not None else {}

    def _whole_network(self) -> torch.nn.Module | None:
        """The network with whole weights: itself, or (FSDP) a copy gathered for rank 0."""
        if not self.sharded:
            return self.net
        from soundvcm.training.export import ema_network

        weights = full_state(self.net.state_dict())  # a collective
        return ema_network(self.net.config, weights).to(self.device) if self.rank == 0 else None

    def checkpoint(self) -> Path:
        """Save a training checkpoint (call on every rank; rank 0 writes)."""
        doc = {
            "config": config_dict(self.config),
            "encoder_set": self.encoder_set,
            "spec": self.spec.to_dict(),
            "network_config": config_to_dict(self.net.config),
            "nonfinite": self.nonfinite,
            "skipped": self.skipped,
            "rng": rng_state(),
            "history": self.history[-1000:],
            "world": self.world,
            "engine": self.engine_name,
            "precision": self.made_with(),
        }
        # whole tensors whatever the engine, so the files are the same for any world size
        self.saved_step = self.step
        if self.rank != 0 and not self.sharded:
            return self.out / "checkpoints"
        state = self.checkpoint_state()
        if self.rank != 0:
            return self.out / "checkpoints"
        return save_checkpoint(self.out / "checkpoints", self.step, *state, doc, self.config.keep_checkpoints)

    def made_with(self) -> dict:
        """The precision of this run's training steps and of the features it trains on."""
        return {"train": self.precision.to_dict(), "features": self.data.meta.precision}

    def checkpoint_state(self) -> tuple[dict, dict, dict]:
        """(network, optimizer, EMA) states with whole tensors, whatever the engine (gathering
        sharded ones is a collective: every rank calls this)."""
        return full_state(self.net.state_dict()), full_optimizer_state(self.optimizer), self.ema.state_dict()

    def samples(self) -> list[Path]:
        """EMA samples (call on every rank: sharded EMA weights are gathered; rank 0 writes)."""
        from soundvcm.training.samples import write_samples

        weights = full_state(self.ema.emas[0]) if self.sharded else self.ema.emas[0]
        if self.rank != 0:
            return []
        return write_samples(self, self.out / "samples" / f"step_{self.step:09d}", weights)

    def export_ema(self, sigma_rel: float | None = None) -> Path:
        """Synthesise the EMA at sigma_rel from the snapshots and save it as a soundvcm checkpoint
        (call on every rank; rank 0 writes)."""
        self.ema.snapshot()
        if self.rank != 0:
            return self.out
        path, _ = export_ema_checkpoint(
            self.out,
            sigma_rel or self.config.ema_export_sigma_rel,
            self.step,
            self.net.config,
            self.spec,
            precision=self.made_with(),
        )
        return path

    # ----- the loop ------------------------------------------------------------------------
    def fit(self, steps: int | None = None) -> list[dict[str, float]]:
        """Train to ``config.steps`` (or ``steps`` more). Ctrl-C finishes the current step, saves a
        checkpoint and raises :class:`TrainingInterrupted`; a second Ctrl-C stops at once."""
        with self.stop.installed():
            return self._fit(steps)

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
                if self.stop.now():  # a step boundary: the state is consistent, save and stop
                    path = self._save_for_stop()
                    raise TrainingInterrupted(self.step, path if main else None)
        finally:  # the bar ends its line whatever stops the loop, so messages start on their own
            bar.close()
        if main:
            self.writer.flush()
        if self.step >= cfg.steps and (main or self.sharded):
            path = self.export_ema()
            if main:
                tqdm.write(f"final EMA weights (sigma_rel {cfg.ema_export_sigma_rel}): {path}")
        return self.history

    def _periodic(self, end: int) -> None:
        """Validation, samples and checkpoints on their schedules (every rank calls this: with FSDP
        they gather whole tensors together; rank 0 writes)."""
        cfg = self.config
        involved = self.rank == 0 or self.sharded
        if cfg.val_every and self.step % cfg.val_every == 0 and involved:
            values = self.validation_loss()
            for k, v in values.items() if self.writer is not None else ():
                self.writer.add_scalar(f"val/{k}", v, self.step)
        if cfg.sample_every and self.step % cfg.sample_every == 0 and involved:
            self.samples()
        if cfg.checkpoint_every and (self.step % cfg.checkpoint_every == 0 or self.step == end):
            self.checkpoint()

    def _save_for_stop(self) -> Path:
        """This step's checkpoint: the periodic one if it was just written, else a new one."""
        if self.saved_step == self.step:
            path = latest_checkpoint(self.out / "checkpoints") if self.rank == 0 else None
        else:
            path = self.checkpoint()
        if self.writer is not None:
            self.writer.flush()
        return path or self.out / "checkpoints"
