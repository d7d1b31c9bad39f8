"""Periodic training outputs: the validation loss, and samples from the EMA weights (audio (flac)
and a spectrogram PNG per row).

The network with the first tracked EMA (sigma_rel 0.05 by default) samples the first rows of the
fixed validation batch with the objective's sampler (Alg. 2 for consistency objectives, Euler +
CFG for flow matching), the encoder set's decoder turns the latents into mel and waveform. If
the decoder's weights are not available, only the latent image is written (with a warning).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from soundvcm.data.mixing import step_generator  # noqa: E402
from soundvcm.media.audio import write_audio  # noqa: E402
from soundvcm.sampling import ConsistencyOptions, initial_noise, sample  # noqa: E402
from soundvcm.training.export import ema_network  # noqa: E402

_DECODERS: dict[str, object] = {}


def _decoder(encoder_set: str):
    if encoder_set not in _DECODERS:
        from soundvcm.encoders import load_encoder_set

        try:
            _DECODERS[encoder_set] = load_encoder_set(encoder_set)
        except (ValueError, OSError) as exc:
            print(f"soundvcm: samples: no decoder for '{encoder_set}' ({exc}); writing latents only", file=sys.stderr)
            _DECODERS[encoder_set] = None
    return _DECODERS[encoder_set]


def _png(path: Path, image: torch.Tensor, title: str) -> None:
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.imshow(image.numpy(), origin="lower", aspect="auto", cmap="magma")
    ax.set_title(title)
    ax.set_xlabel("frame")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


VAL_TIMES = (0.1, 0.3, 0.5, 0.7, 0.9)


@torch.no_grad()
def validation_loss(trainer, net) -> dict[str, float]:
    """Flow-matching MSE of u(x_t, t, t) at fixed t on fixed rows and noise (comparable across runs)."""
    net.eval()
    g = step_generator(trainer.config.seed, -1, 0, 0, "validation")
    batch = trainer.data.batch(net, trainer.config.val_batch, g, trainer.device)
    prepared = net.prepare(batch.conditions)
    eps = torch.randn(batch.x0.shape, generator=g).to(trainer.device)
    out = {}
    for t_val in VAL_TIMES:
        t = torch.full((batch.x0.shape[0],), t_val, device=trainer.device)
        x_t = (1 - t_val) * batch.x0 + t_val * eps
        u = net(x_t, t, t, prepared).float()
        out[f"val_t{t_val:.1f}"] = float((u - (eps - batch.x0)).square().mean())
    out["val"] = sum(out.values()) / len(out)
    return out


@torch.no_grad()
def write_samples(trainer, folder: Path, weights: dict[str, torch.Tensor], rows: int = 2) -> list[Path]:
    """Sample the first validation rows with the network carrying ``weights`` (the first EMA)."""
    folder.mkdir(parents=True, exist_ok=True)
    net = ema_network(trainer.net.config, weights).to(trainer.device).eval()
    g = step_generator(trainer.config.seed, -1, 0, 0, "validation")
    batch = trainer.data.batch(net, max(rows, trainer.config.val_batch), g, trainer.device)
    conditions = {k: v[:rows].detach() for k, v in batch.conditions.items()}
    prepared = net.prepare(conditions)
    noise = initial_noise((rows, *batch.x0.shape[1:]), seed=trainer.config.seed).to(trainer.device)
    options = trainer.spec.sampler
    if isinstance(options, ConsistencyOptions):
        options = replace(options, steps=trainer.config.sample_steps)
    x = sample(net, noise, prepared, options, net.prepare_null(rows) if options.needs_null else None)
    latent = net.unnormalize(x)
    decoder = trainer.decoder if trainer.decoder is not None else _decoder(trainer.encoder_set)
    written = []
    for i in range(rows):
        stem = folder / f"sample_{i}"
        if decoder is None:
            _png(stem.with_suffix(".png"), latent[i].T.float().cpu(), f"latent, step {trainer.step}")
            written.append(stem.with_suffix(".png"))
            continue
        mel = decoder.decode_latent(latent[i : i + 1])
        wave = decoder.vocode(mel)[0].float().cpu()
        written.append(write_audio(stem.with_suffix(".flac"), wave, trainer.data.meta.sample_rate))
        _png(stem.with_suffix(".png"), mel[0].float().cpu(), f"mel, EMA sample {i}, step {trainer.step}")
        written.append(stem.with_suffix(".png"))
    return written
