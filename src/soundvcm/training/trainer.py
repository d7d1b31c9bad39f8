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
from torch import Tensor
from tqdm import tqdm

from soundvcm.conditions import Batch
from soundvcm.console import is_terminal
from soundvcm.data.mixing import MixedSource, step_generator
from soundvcm.device import compile_module, dist_info
from soundvcm.network.checkpoint import config_to_dict
from soundvcm.network.mmdit import MMDiT
from soundvcm.network.protocol import autocast
from soundvcm.objectives import build_objective, config_of
from soundvcm.precision import resolve_precision
from soundvcm.spec import ModelSpec, network_for_cache
from soundvcm.training.checkpoint import (
    NonFiniteWeights,
    clean_stale,
    first_nonfinite,
    latest_checkpoint,
    load_checkpoint,
    read_checkpoint_doc,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from soundvcm.training.config import TrainConfig, config_dict
from soundvcm.training.export import ema_network, export_ema_checkpoint
from soundvcm.training.finetune import add_lora, freeze_except, load_init, load_teacher
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
from soundvcm.training.samples import load_decoder, validation_loss, write_samples
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
        self.config, self.out, self.decoder, self.resume, self.init = config, Path(out), decoder, resume, init
        self.resume_from = latest_checkpoint(self.out / "checkpoints") if resume else None
        self._setup_processes(device)
        self.stop = StopRequest(self.rank, self.world, self.device)
        self.data = MixedSource.open(data, allow_mixed_encoders)
        torch.manual_seed(config.seed)
        self.net = self._build_network(init)
        # autocast: bf16 on a GPU or a native-bf16 CPU where faster (soundvcm.precision); recorded in checkpoints
        self.precision = resolve_precision(config.precision, self.device, ("train",))
        self.objective = build_objective(config.objective, config.steps, config.objective_config)
        self.spec = ModelSpec.create(
            config.network, self.encoder_set, config.objective, config_of(self.objective), self.net.config
        )
        saved = self._start_or_resume(init)  # whole weights go in before any sharding
        load_teacher(self.objective, self.net, self.encoder_set, self.precision.dtype("train"))  # VCM's teacher.source
        self.engine = self._build_engine(parallel)
        params = [p for p in self.net.parameters() if p.requires_grad]  # FSDP's sharded ones, if sharded
        self.optimizer = torch.optim.AdamW(
            params,
            lr=config.lr,
            betas=config.betas,
            weight_decay=config.weight_decay,
            eps=config.eps,
            fused=self.device.type == "cuda",
        )
        ema_folder, writer = self.out / "ema", self.engine.is_writer
        self.ema = PostHocEMA(self.net, config.ema_sigma_rels, config.ema_snapshot_every, ema_folder, write=writer)
        self.step = self.nonfinite = self.skipped = 0
        self.saved_step = -1
        self.history: list[dict[str, float]] = []
        if saved is not None:
            self._restore_state(*saved)
        self.writer: Any = None  # TensorBoard's SummaryWriter on the writer while fitting

    def _build_network(self, init) -> MMDiT:
        """The preset sized for the caches (or ``init``'s own network), with fine-tuning adapters."""
        net_config, self.encoder_set = network_for_cache(self.config.network, self.data.meta)
        if init is not None:  # the source's own network config (MMAudio's time convention included)
            net = load_init(init, self.encoder_set, net_config.sequence.duration).to(self.device)
        else:
            net = MMDiT(net_config).to(self.device)
        cfg = self.config
        if cfg.lora_rank:  # fine-tuning: LoRA adapters and/or the trainable subset (training/finetune.py)
            add_lora(net, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets)
        if cfg.trainable:
            freeze_except(net, cfg.trainable)
        return net

    def _build_engine(self, parallel: str):
        """What computes the step's loss (the network under the run's autocast, compiled if asked) and
        combines gradients over ranks; it also owns "who writes" and gathering whole tensors."""
        self.engine_name = resolve_engine(parallel, self.world)
        compiled, note = compile_module(self.net, self.device) if self.config.compile else (self.net, None)
        if note and self.rank == 0:
            print(f"soundvcm: {note}", file=sys.stderr)
        model = autocast(compiled, self.precision.dtype("train"))  # what the objective calls
        return build_engine(self.engine_name, self.net, model, self.objective, self.device)

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

    # ----- setup ---------------------------------------------------------------------------
    @torch.no_grad()
    def _set_latent_stats(self) -> None:
        mean, std = self.data.latent_stats(self.config.latent_stats_rows, self.config.seed)
        self.net.latent_mean.copy_(mean.view(1, 1, -1))
        self.net.latent_std.copy_(std.view(1, 1, -1))

    def _restore(self, path: Path) -> tuple:
        net, optimizer, ema, doc = load_checkpoint(path)
        moments = {f"optimizer.{i}.{k}": v for i, entry in optimizer["state"].items() for k, v in entry.items()}
        bad = first_nonfinite({**{f"net.{k}": v for k, v in net.items()}, **{f"ema.{k}": v for k, v in ema.items()}})
        bad = bad or first_nonfinite({k: v for k, v in moments.items() if isinstance(v, torch.Tensor)})
        if bad is not None:  # stop at once: training on would only skip steps and save the poison again
            raise NonFiniteWeights(f"{path}: {bad} holds NaN or inf; this checkpoint cannot be resumed from")
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
        mean_loss = self.engine.mean(out.loss)  # the logged loss is every rank's, not the writer's
        self.nonfinite = 0
        self.ema.update(self.net)
        self.step += 1
        return {"loss": mean_loss, "lr": lr, "grad_norm": out.grad_norm, "skipped": 0, **loss_by_t(out.t, out.mse)}

    def _skip(self, lr: float) -> dict[str, Any]:
        self.nonfinite += 1
        self.skipped += 1
        if self.engine.is_writer:
            tqdm.write(f"soundvcm: step {self.step}: non-finite loss, step skipped ({self.nonfinite} in a row)")
        if self.nonfinite >= self.config.max_nonfinite:
            raise TrainingAborted(
                f"{self.nonfinite} consecutive non-finite losses at step {self.step}; "
                f"lower the learning rate or check the data (last checkpoint: {self.out}/checkpoints)"
            )
        self.step += 1
        return {"loss": float("nan"), "lr": lr, "skipped": 1}

    # ----- validation, samples, checkpoints (every rank calls these; the engine gathers, the writer writes)
    def validation_loss(self) -> dict[str, float]:
        """Flow-matching MSE of u(x_t, t, t) at fixed t on fixed rows and noise ({} off the writer)."""
        net = self.engine.gather(self._whole_network)
        return validation_loss(net, *self._validation_batch(net)) if net is not None else {}

    def _whole_network(self) -> torch.nn.Module:
        """The network with whole weights: itself, or (sharded) a copy made from the gathered weights."""
        if not self.engine.sharded:
            return self.net
        return ema_network(self.net.config, full_state(self.net.state_dict())).to(self.device)

    def _validation_batch(self, net, rows: int | None = None) -> tuple[Batch, Tensor]:
        """The fixed validation rows and noise (drawn with ``net``'s current null features)."""
        g = step_generator(self.config.seed, -1, 0, 0, "validation")
        batch = self.data.batch(net, rows or self.config.val_batch, g, self.device)
        return batch, torch.randn(batch.x0.shape, generator=g).to(self.device)

    def checkpoint(self) -> Path:
        """Save a training checkpoint with whole tensors, the same files whatever the engine."""
        self.saved_step = self.step
        state = self.engine.gather(self.checkpoint_state)
        if state is None:
            return self.out / "checkpoints"
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
        net, optimizer, ema = state
        return save_checkpoint(
            self.out / "checkpoints", self.step, net, optimizer, ema, doc, self.config.keep_checkpoints
        )

    def checkpoint_state(self) -> tuple[dict, dict, dict]:
        """(network, optimizer, EMA) states with whole tensors (a collective when sharded)."""
        return full_state(self.net.state_dict()), full_optimizer_state(self.optimizer), self.ema.state_dict()

    def made_with(self) -> dict:
        """The precision of this run's training steps and of the features it trains on."""
        return {"train": self.precision.to_dict(), "features": self.data.meta.precision}

    def samples(self) -> list[Path]:
        """Samples of the first validation rows from the first EMA's weights (audio and spectrograms)."""
        weights = self.engine.gather(lambda: full_state(self.ema.emas[0]))
        if weights is None:
            return []
        net = ema_network(self.net.config, weights).to(self.device).eval()
        batch, _ = self._validation_batch(net, max(2, self.config.val_batch))
        decoder = self.decoder if self.decoder is not None else load_decoder(self.encoder_set)
        folder = self.out / "samples" / f"step_{self.step:09d}"
        steps, seed, rate = self.config.sample_steps, self.config.seed, self.data.meta.sample_rate
        return write_samples(net, batch, self.spec, decoder, folder, rate, self.step, steps, seed)

    def export_ema(self, sigma_rel: float | None = None) -> Path:
        """Synthesise the EMA at sigma_rel from the snapshots and save it as a soundvcm checkpoint."""
        self.ema.snapshot()
        if not self.engine.is_writer:
            return self.out
        sigma = sigma_rel or self.config.ema_export_sigma_rel
        path, _ = export_ema_checkpoint(
            self.out, sigma, self.step, self.net.config, self.spec, precision=self.made_with()
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
        main = self.engine.is_writer
        if main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "tb"), purge_step=self.step)
        shown = main and is_terminal(sys.stderr)  # a log file gets plain lines (ProgressLog), not a bar
        bar = tqdm(total=end, initial=self.step, desc="train", unit="step", disable=not shown, file=sys.stderr)
        log = ProgressLog(bar, self.step, plain=main)
        try:
            while self.step < end:
                record = self.train_step()
                record["step"] = self.step
                self.history.append({"step": self.step, "loss": record["loss"]})
                if main:
                    log.add(record, self.writer if self.step % cfg.log_every == 0 or self.step == end else None)
                self._periodic(end)
                self.engine.barrier()
                if self.stop.now():  # a step boundary: the state is consistent, save and stop
                    path = self._save_for_stop()
                    raise TrainingInterrupted(self.step, path if main else None)
        finally:  # the bar ends its line whatever stops the loop, so messages start on their own
            bar.close()
        if main:
            self.writer.flush()
        if self.step >= cfg.steps:
            path = self.export_ema()
            if main:
                tqdm.write(f"final EMA weights (sigma_rel {cfg.ema_export_sigma_rel}): {path}")
        return self.history

    def _periodic(self, end: int) -> None:
        """Validation, samples and checkpoints on their schedules (every rank calls this)."""
        cfg = self.config
        if cfg.val_every and self.step % cfg.val_every == 0:
            values = self.validation_loss()
            for k, v in values.items() if self.writer is not None else ():
                self.writer.add_scalar(f"val/{k}", v, self.step)
        if cfg.sample_every and self.step % cfg.sample_every == 0:
            self.samples()
        if cfg.checkpoint_every and (self.step % cfg.checkpoint_every == 0 or self.step == end):
            self.checkpoint()

    def _save_for_stop(self) -> Path:
        """This step's checkpoint: the periodic one if it was just written, else a new one."""
        if self.saved_step == self.step:
            path = latest_checkpoint(self.out / "checkpoints") if self.engine.is_writer else None
        else:
            path = self.checkpoint()
        if self.writer is not None:
            self.writer.flush()
        return path or self.out / "checkpoints"
