"""Periodic training outputs: the validation loss, and samples from the EMA weights (audio (flac)
and a spectrogram PNG per row), from typed inputs (a network, a batch, the spec, a decoder, a folder).

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
from torch import Tensor  # noqa: E402

from soundvcm.conditions import Batch  # noqa: E402
from soundvcm.media.audio import write_audio  # noqa: E402
from soundvcm.sampling import ConsistencyOptions, initial_noise, sample  # noqa: E402
from soundvcm.spec import ModelSpec  # noqa: E402

_DECODERS: dict[str, object] = {}


def load_decoder(encoder_set: str):
    """The encoder set that turns latents into audio (loaded once per set; None, with a warning, when
    its weights are missing: samples are then latent images only)."""
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
def validation_loss(net, batch: Batch, eps: Tensor) -> dict[str, float]:
    """Flow-matching MSE of u(x_t, t, t) at the fixed times on ``batch`` with noise ``eps`` (the
    trainer passes the same rows and noise every time: comparable across steps and runs)."""
    net.eval()
    prepared = net.prepare(batch.conditions)
    out = {}
    for t_val in VAL_TIMES:
        t = torch.full((batch.x0.shape[0],), t_val, device=batch.x0.device)
        x_t = (1 - t_val) * batch.x0 + t_val * eps
        u = net(x_t, t, t, prepared).float()
        out[f"val_t{t_val:.1f}"] = float((u - (eps - batch.x0)).square().mean())
    out["val"] = sum(out.values()) / len(out)
    return out


@torch.no_grad()
def write_samples(
    net,
    batch: Batch,
    spec: ModelSpec,
    decoder,
    folder: Path,
    sample_rate: int,
    step: int,
    sample_steps: int = 1,
    seed: int = 0,
    rows: int = 2,
) -> list[Path]:
    """Sample the first ``rows`` of ``batch`` with ``net`` (the EMA weights) and the spec's sampler
    (a consistency sampler at ``sample_steps``); write audio and a spectrogram per row into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    conditions = {k: v[:rows].detach() for k, v in batch.conditions.items()}
    prepared = net.prepare(conditions)
    noise = initial_noise((rows, *batch.x0.shape[1:]), seed=seed).to(batch.x0.device)
    options = spec.sampler
    if isinstance(options, ConsistencyOptions):
        options = replace(options, steps=sample_steps)
    x = sample(net, noise, prepared, options, net.prepare_null(rows) if options.needs_null else None)
    latent = net.unnormalize(x)
    written = []
    for i in range(rows):
        stem = folder / f"sample_{i}"
        if decoder is None:
            _png(stem.with_suffix(".png"), latent[i].T.float().cpu(), f"latent, step {step}")
            written.append(stem.with_suffix(".png"))
            continue
        mel = decoder.decode_latent(latent[i : i + 1])
        wave = decoder.vocode(mel)[0].float().cpu()
        written.append(write_audio(stem.with_suffix(".flac"), wave, sample_rate))
        _png(stem.with_suffix(".png"), mel[0].float().cpu(), f"mel, EMA sample {i}, step {step}")
        written.append(stem.with_suffix(".png"))
    return written
