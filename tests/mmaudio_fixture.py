"""Helpers for the MMAudio reference fixtures (see tests/fixtures/README.md)."""

import zlib
from pathlib import Path

import torch
from safetensors import safe_open

FIXTURES = Path(__file__).parent / "fixtures"


def rule_weight(key, shape, seed):
    """The deterministic weights the fixtures were made with."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(key.encode()))
    x = torch.randn(tuple(shape), generator=g, dtype=torch.float32)
    return x.abs() * 0.5 + 0.5 if key == "latent_std" else x * 0.05


def load_fixture(name):
    """(metadata, tensors) of a fixture file."""
    with safe_open(str(FIXTURES / name), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    return meta, tensors
