"""Tiny random models for tests: every path of the pipeline in seconds on a CPU."""

from __future__ import annotations

from pathlib import Path

import torch

from soundvcm.network.checkpoint import save_network
from soundvcm.network.mmdit import MMDiT
from soundvcm.spec import preset_for_encoders


def debug_model(path: Path, objective: str = "vcm", seed: int = 0, encoders: str = "lite") -> Path:
    """A random ``debug`` network on ``encoders`` whose output depends on its conditions (the zero-
    initialised layers drawn small instead), saved as a checkpoint at ``path``."""
    config, encoder_set = preset_for_encoders("debug", encoders)
    torch.manual_seed(seed)
    net = MMDiT(config)
    with torch.no_grad():
        for p in net.parameters():
            if p.requires_grad and p.abs().sum() == 0:
                p.normal_(0, 0.02)
    save_network(path, net, preset="debug", encoder_set=encoder_set, objective=objective)
    return path


def run_cli(args, capsys) -> tuple[int, str, str]:
    """``soundvcm ARGS`` in this process: (exit status, stdout, stderr)."""
    from soundvcm.cli import main

    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def mismatched_model(d: Path) -> Path:
    """A checkpoint that says 'lite' but whose network takes 512-d visual features."""
    from dataclasses import replace

    config, _ = preset_for_encoders("debug", "lite")
    save_network(d / "mismatch", MMDiT(replace(config, clip_dim=512)), preset="debug", encoder_set="lite")
    return d / "mismatch"
