"""A compact learned latent for the lite sets (issue 33): a small mel VAE trained on the open data.

The lite2 set generates HiFi-GAN's raw log-mel, two frames per token (160 channels at 43 Hz). The
paper's pipeline generates in a mel VAE's latent (20 channels); a candidate cause of lite2's
noise-shaped texture is that every one of 160 raw channels carries the seed's noise to the output.
This trains MMAudio's VAE architecture (:class:`soundvcm.encoders.mel_vae.MelVAE`, the ``lite``
size: 80 bands -> 20 channels, one 2x time downsampling, so the token rate stays 43 Hz) on the
exact HiFi-GAN mels stored in lite2 feature caches.

Objective: L1 between the log-mel and its reconstruction from a posterior sample (the band
statistics normalise both), plus ``kl`` x the KL divergence to N(0, I) (both means over elements),
AdamW with a linear warm-up and a cosine decay, EDM2's forced weight normalisation after each step.
A run folder holds ``checkpoint.safetensors`` + ``checkpoint.json`` (resumable, atomic) and
``log.jsonl``; :func:`export` writes the inference weights (folded, fp32) and their config.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor

from soundvcm.atomic import atomic_write, save_tensors
from soundvcm.encoders.lite import latent_to_mel
from soundvcm.encoders.mel_vae import VAE_CONFIGS, MelVAE, MPConv1d


@dataclass(frozen=True)
class VAETrainConfig:
    steps: int = 6000
    batch: int = 32
    frames: int = 172  # mel frames per training crop (2 s at 86 fps; even: one latent per 2)
    lr: float = 1e-3
    warmup: int = 200
    kl: float = 1e-3
    size: str = "lite"
    seed: int = 0
    val_rows: int = 256
    log_every: int = 100
    checkpoint_every: int = 500


def cache_mels(caches: list[Path], dtype: torch.dtype = torch.float16) -> Tensor:
    """Every row's exact log-mel (N, 80, F) from lite2 feature caches (their latent is the mel)."""
    from soundvcm.data.cache import FeatureCache

    mels = []
    for path in caches:
        cache = FeatureCache(path)
        if cache.meta.latent_shape[1] != 160:
            raise ValueError(f"{path}: not a lite/lite2 cache (latent width {cache.meta.latent_shape[1]}, not 160)")
        for i in range(len(cache)):
            row = cache.row(i)
            mels.append(latent_to_mel(row["mean"][None].float())[0].to(dtype))
    return torch.stack(mels)


def band_stats(mels: Tensor) -> tuple[Tensor, Tensor]:
    """Per-band mean and std over all frames, (1, 80, 1) each (the VAE's fixed input normalisation)."""
    x = mels.float().transpose(0, 1).reshape(mels.shape[1], -1)
    return x.mean(1).view(1, -1, 1), x.std(1).clamp_min(1e-3).view(1, -1, 1)


def vae_loss(vae: MelVAE, mel: Tensor, kl: float, generator: torch.Generator | None = None) -> tuple[Tensor, dict]:
    mean, logvar = vae.posterior(mel)
    z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=generator)
    rec = vae.reconstruct(z)
    l1 = (rec - mel).abs().mean()
    kld = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
    return l1 + kl * kld, {"l1": float(l1), "kl": float(kld)}


def _crops(mels: Tensor, idx: Tensor, frames: int, g: torch.Generator) -> Tensor:
    start = torch.randint(0, mels.shape[-1] - frames + 1, (len(idx),), generator=g)
    start -= start % 2
    return torch.stack([mels[i, :, s : s + frames] for i, s in zip(idx.tolist(), start.tolist())]).float()


def train_vae(caches: list[Path], out: Path, cfg: VAETrainConfig, progress=None) -> Path:
    """Train (or resume) a mel VAE in ``out``; returns the checkpoint path."""
    out.mkdir(parents=True, exist_ok=True)
    mels = cache_mels(caches)
    g = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(len(mels), generator=g)
    val, train = mels[order[: cfg.val_rows]], mels[order[cfg.val_rows :]]
    torch.manual_seed(cfg.seed)
    vae = MelVAE(**VAE_CONFIGS[cfg.size])
    mean, std = band_stats(train)
    vae.load_state_dict({**vae.state_dict(), "data_mean": mean, "data_std": std})
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)
    step = 0
    ckpt = out / "checkpoint.safetensors"
    if ckpt.is_file():
        state = load_file(str(ckpt))
        vae.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("vae.")})
        doc = json.loads((out / "checkpoint.json").read_text())
        opt.load_state_dict(_optimizer_state(state, doc["optimizer"]))
        step = doc["step"]
        g.set_state(torch.tensor(doc["generator"], dtype=torch.uint8))
    convs = [m for m in vae.modules() if isinstance(m, MPConv1d)]
    log = out / "log.jsonl"
    while step < cfg.steps:
        vae.train()
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup) * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        batch = _crops(train, torch.randint(0, len(train), (cfg.batch,), generator=g), cfg.frames, g)
        loss, parts = vae_loss(vae, batch, cfg.kl, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for conv in convs:
            conv.renormalize()
        step += 1
        if progress is not None:
            progress(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            record = {"step": step, "lr": lr, **parts, "val_l1": validate(vae, val, cfg.frames)}
            with open(log, "a") as f:
                f.write(json.dumps(record) + "\n")
            print(f"step {step}: {json.dumps(record)}", file=sys.stderr)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            _save(out, vae, opt, step, g, cfg)
    return ckpt


@torch.no_grad()
def validate(vae: MelVAE, val: Tensor, frames: int) -> float:
    """Held-out L1 of the log-mel through the posterior mean (what inference decodes), whole clips."""
    vae.eval()
    total = 0.0
    for i in range(0, len(val), 32):
        mel = val[i : i + 32].float()
        mel = mel[..., : mel.shape[-1] - mel.shape[-1] % 2]
        mean, _ = vae.posterior(mel)
        total += float((vae.reconstruct(mean) - mel).abs().mean()) * len(mel)
    return total / len(val)


def _optimizer_state(state: dict[str, Tensor], doc: dict) -> dict:
    tensors: dict[int, dict] = {}
    for key, value in state.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            tensors.setdefault(int(idx), {})[name] = value
    for key, value in doc["scalars"].items():
        idx, name = key.split(".", 1)
        tensors.setdefault(int(idx), {})[name] = value
    return {"state": tensors, "param_groups": doc["param_groups"]}


def _save(out: Path, vae: MelVAE, opt, step: int, g: torch.Generator, cfg: VAETrainConfig) -> None:
    state = {f"vae.{k}": v.detach().contiguous() for k, v in vae.state_dict().items()}
    scalars = {}
    for idx, entry in opt.state_dict()["state"].items():
        for name, value in entry.items():
            if isinstance(value, Tensor):
                state[f"opt.{idx}.{name}"] = value.contiguous()
            else:
                scalars[f"{idx}.{name}"] = value
    doc = {
        "step": step,
        "config": asdict(cfg),
        "generator": g.get_state().tolist(),
        "optimizer": {"param_groups": opt.state_dict()["param_groups"], "scalars": scalars},
    }
    atomic_write(out / "checkpoint.safetensors", lambda tmp: save_tensors(tmp, state))
    atomic_write(out / "checkpoint.json", lambda tmp: tmp.write_text(json.dumps(doc)))


def export(run: Path, stem: Path) -> tuple[Path, Path]:
    """The inference weights of a run: STEM.safetensors (folded, fp32) and STEM.json (size, step, val L1)."""
    doc = json.loads((run / "checkpoint.json").read_text())
    cfg = VAETrainConfig(**doc["config"])
    vae = MelVAE(**VAE_CONFIGS[cfg.size])
    state = load_file(str(run / "checkpoint.safetensors"))
    vae.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("vae.")})
    vae.prepare()
    lines = (run / "log.jsonl").read_text().splitlines() if (run / "log.jsonl").is_file() else []
    meta = {"size": cfg.size, "step": doc["step"], "val_l1": json.loads(lines[-1])["val_l1"] if lines else None}
    weights = stem.with_suffix(".safetensors")
    atomic_write(weights, lambda tmp: save_tensors(tmp, {k: v.contiguous() for k, v in vae.state_dict().items()}))
    config = stem.with_suffix(".json")
    atomic_write(config, lambda tmp: tmp.write_text(json.dumps(meta, indent=1)))
    return weights, config


def transcode(source: Path, out: Path, stem: Path | None = None, progress=None) -> Path:
    """A lite3 feature cache from a lite2 one: the same rows, visual, sync and text features, and the
    latent re-encoded by the mel VAE at ``stem`` from the exact mel the lite2 latent holds (no video
    is decoded again). Shards already written are skipped, so a rerun resumes."""
    from dataclasses import replace

    from safetensors import safe_open

    from soundvcm.atomic import atomic_write as _write
    from soundvcm.data.cache import CacheMeta, shard_path, write_shard
    from soundvcm.data.extract import md5sum
    from soundvcm.encoders.lite import LITE3_SPEC, MEL_VAE, PATCH, load_mel_vae

    stem = stem or MEL_VAE
    meta = CacheMeta.load(source)
    if meta.encoder_set != "lite2":
        raise ValueError(f"{source}: a {meta.encoder_set} cache; transcode reads lite2 caches")
    vae = load_mel_vae(stem)
    out.mkdir(parents=True, exist_ok=True)
    hashes = {**meta.weight_hashes, "mel_vae": md5sum(stem.with_suffix(".safetensors"))}
    length = meta.latent_shape[0]
    new = replace(meta, encoder_set=LITE3_SPEC.name, latent_shape=[length, LITE3_SPEC.latent_dim], weight_hashes=hashes)
    for shard in range(meta.num_shards):
        if shard_path(out, shard).is_file():
            continue
        with safe_open(str(shard_path(source, shard)), "pt") as handle:
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118 (safe_open is no dict)
            info = handle.metadata()
        mel = latent_to_mel(tensors["mean"].float())  # (N, 80, 2L)
        with torch.inference_mode():
            mean, std = vae.encode(mel[..., : mel.shape[-1] - mel.shape[-1] % PATCH])
        tensors["mean"], tensors["std"] = mean.transpose(1, 2).contiguous(), std.transpose(1, 2).contiguous()
        ids, captions, valid = (json.loads(info[k]) for k in ("ids", "captions", "valid"))
        write_shard(out, shard, tensors, ids, captions, valid)
        if progress is not None:
            progress(1)
    new.save(out)
    _write(out / "transcoded.json", lambda tmp: tmp.write_text(json.dumps({"from": str(source), "vae": str(stem)})))
    return out
