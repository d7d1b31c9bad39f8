"""``soundvcm latent train|export``: the lite3 set's learned mel latent (issue 33)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from soundvcm.cli.common import add_out_argument, positive_float, positive_int


def register(commands) -> None:
    lat = commands.add_parser("latent", help="train the compact mel VAE of the lite3 encoder set, or export it")
    sub = lat.add_subparsers(dest="latent", required=True, metavar="ACTION")
    tr = sub.add_parser(
        "train",
        help="train a mel VAE on the exact log-mels of lite2 feature caches (resumable)",
        description="Reads every row's HiFi-GAN log-mel from lite2 caches (their latent is the mel), trains "
        "MMAudio's VAE architecture at the lite size (80 bands -> 20 channels, 2x in time) with L1 + KL, and "
        "saves OUT/checkpoint.* every 500 steps. Rerun the same command to resume.",
    )
    tr.add_argument("--data", required=True, type=Path, nargs="+", help="lite2 feature caches")
    tr.add_argument("--out", required=True, type=Path, help="run folder")
    tr.add_argument("--train-steps", type=positive_int, default=6000, help="optimizer steps (default 6000)")
    tr.add_argument("--batch", type=positive_int, default=32, help="crops per step (default 32)")
    tr.add_argument("--kl", type=positive_float, default=1e-3, help="weight of the KL term (default 1e-3)")
    tr.add_argument("--lr", type=positive_float, default=1e-3, help="peak learning rate (default 1e-3)")
    tr.set_defaults(func=_train)
    ex = sub.add_parser("export", help="write a run's VAE for inference: OUT.safetensors + OUT.json")
    ex.add_argument("run", type=Path, help="run folder of `soundvcm latent train`")
    add_out_argument(ex, "output stem (OUT.safetensors + OUT.json)")
    ex.set_defaults(func=_export)
    tc = sub.add_parser(
        "transcode",
        help="a lite3 feature cache from a lite2 one (the latent re-encoded by the mel VAE; no video decoded)",
    )
    tc.add_argument("--input", required=True, type=Path, help="a lite2 feature cache")
    tc.add_argument("--out", required=True, type=Path, help="the lite3 cache to write (resumable)")
    tc.add_argument("--vae", type=Path, default=None, help="a `soundvcm latent export` stem (default: the shipped one)")
    tc.set_defaults(func=_transcode)


def _train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from soundvcm.training.latent_vae import VAETrainConfig, train_vae

    cfg = VAETrainConfig(steps=args.train_steps, batch=args.batch, kl=args.kl, lr=args.lr)
    with tqdm(total=cfg.steps, desc="latent vae", unit="step", file=sys.stderr) as bar:
        train_vae(list(args.data), args.out, cfg, bar.update)
    return 0


def _export(args: argparse.Namespace) -> int:
    from soundvcm.training.latent_vae import export

    weights, config = export(args.run, args.out)
    print(f"{weights}\n{config}")
    return 0


def _transcode(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from soundvcm.data.cache import CacheMeta
    from soundvcm.training.latent_vae import transcode

    shards = CacheMeta.load(args.input).num_shards
    with tqdm(total=shards, desc="transcode", unit="shard", file=sys.stderr) as bar:
        out = transcode(args.input, args.out, args.vae, bar.update)
    print(out)
    return 0
