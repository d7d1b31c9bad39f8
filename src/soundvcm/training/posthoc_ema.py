"""Post-hoc EMA (Karras et al. 2024, "Analyzing and improving the training dynamics of diffusion
models", EDM2 §3), our own implementation, as MMAudio uses it through nitrous-ema.

During training, power-function EMAs are tracked for a few relative widths sigma_rel
(default 0.05 and 0.1): ema_t = beta_t ema_{t-1} + (1 - beta_t) theta_t with
beta_t = (1 - 1/t)^(gamma + 1), where sigma_rel^2 = (gamma + 1) / ((gamma + 2)^2 (gamma + 3)).
Every ``snapshot_every`` steps the EMAs are saved (safetensors). After training, the EMA of any
other sigma_rel is synthesised as the least-squares combination of the snapshots whose
power-function profiles best match the target profile (EDM2 Algorithm 3: solve A x = b with
A_ij = <p_i, p_j>, b_i = <p_i, p_target>).
"""

from __future__ import annotations

import json
import re
from functools import partial
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from soundvcm.atomic import atomic_write, save_tensors
from soundvcm.training.parallel import full, is_sharded, shard_like


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """The exponent gamma whose power-function EMA has relative width sigma_rel (EDM2 Eq. 3)."""
    t = sigma_rel**-2
    return float(np.roots([1, 7, 16 - t, 12 - t]).real.max())


def _p_dot_p(t_a, gamma_a, t_b, gamma_b):
    """Inner product of two power-function EMA profiles (EDM2 Algorithm 3)."""
    t_ratio = t_a / t_b
    t_exp = np.where(t_a < t_b, gamma_b, -gamma_a)
    t_max = np.maximum(t_a, t_b)
    num = (gamma_a + 1) * (gamma_b + 1) * t_ratio**t_exp
    den = (gamma_a + gamma_b + 1) * t_max
    return num / den


def solve_weights(in_t, in_gamma, out_t: float, out_gamma: float) -> np.ndarray:
    """Coefficients of the snapshots (t_i, gamma_i) that best reproduce the EMA (out_t, out_gamma)."""
    in_t, in_gamma = np.asarray(in_t, np.float64), np.asarray(in_gamma, np.float64)
    a = _p_dot_p(in_t[:, None], in_gamma[:, None], in_t[None, :], in_gamma[None, :])
    b = _p_dot_p(in_t, in_gamma, np.float64(out_t), np.float64(out_gamma))
    return np.linalg.lstsq(a, b, rcond=None)[0]


def _save(tmp: Path, data: dict[str, Tensor], meta: dict[str, str]) -> None:
    save_tensors(tmp, data, metadata=meta)


class PostHocEMA:
    """Tracks power-function EMAs of a module's floating-point state and snapshots them."""

    def __init__(
        self, net: nn.Module, sigma_rels=(0.05, 0.1), snapshot_every: int = 5000, folder=None, write: bool = True
    ):
        """``write``: this process saves the snapshots (rank 0 of a distributed run). The EMA copies
        are laid out as the network's tensors: sharded where FSDP shards them; snapshots and
        :meth:`state_dict` hold whole tensors (gathering is a collective: every rank calls them)."""
        self.write = write
        self.sigma_rels = tuple(float(s) for s in sigma_rels)
        self.gammas = [sigma_rel_to_gamma(s) for s in self.sigma_rels]
        self.snapshot_every = snapshot_every
        self.folder = Path(folder) if folder is not None else None
        self.step = 0
        self.emas = [self._copy(net) for _ in self.sigma_rels]

    @staticmethod
    def _copy(net: nn.Module) -> dict[str, Tensor]:
        return {k: v.detach().clone().float() for k, v in net.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        self.step += 1
        current = {k: v for k, v in net.state_dict().items() if v.is_floating_point()}
        for ema, gamma in zip(self.emas, self.gammas):
            beta = (1 - 1 / self.step) ** (gamma + 1)
            for k, v in ema.items():
                v.lerp_(current[k].detach().float(), 1 - beta)
        if self.folder is not None and self.snapshot_every and self.step % self.snapshot_every == 0:
            self.snapshot()

    def snapshot(self) -> list[Path]:
        if self.step == 0:
            raise ValueError("no EMA updates yet (step 0): train at least one step before exporting EMA weights")
        if self.folder is None:
            raise ValueError("this EMA has no snapshot folder")
        if not self.write and not any(is_sharded(v) for v in self.emas[0].values()):
            return []  # nothing to gather, nothing to write
        paths = []
        for ema, sigma in zip(self.emas, self.sigma_rels):
            path = self.folder / f"ema_{sigma:.3f}_{self.step:09d}.safetensors"
            data = {k: full(v).contiguous() for k, v in ema.items()}
            if not self.write:
                continue
            meta = {"step": str(self.step), "sigma_rel": str(sigma)}
            atomic_write(path, partial(_save, data=data, meta=meta))
            paths.append(path)
        return paths

    def state_dict(self) -> dict[str, Tensor]:
        out = {f"ema{i}.{k}": full(v) for i, ema in enumerate(self.emas) for k, v in ema.items()}
        out["step"] = torch.tensor(self.step)
        return out

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.step = int(state["step"])
        for i, ema in enumerate(self.emas):
            for k in ema:
                ema[k] = shard_like(state[f"ema{i}.{k}"], ema[k])


SNAPSHOT = re.compile(r"ema_(\d+\.\d+)_(\d+)\.safetensors$")


def synthesize(folder: str | Path, sigma_rel: float, step: int | None = None) -> tuple[dict[str, Tensor], dict]:
    """The EMA at ``sigma_rel`` (and at ``step``, default the last snapshot) from the snapshots."""
    folder = Path(folder)
    found = sorted(
        (float(m[1]), int(m[2]), p) for p in folder.glob("ema_*.safetensors") if (m := SNAPSHOT.search(p.name))
    )
    if not found:
        raise FileNotFoundError(f"{folder}: no EMA snapshots (ema_SIGMA_STEP.safetensors)")
    last = max(s for _, s, _ in found)
    # a target after the last snapshot is not representable (its profile weighs steps no snapshot
    # saw): the least-squares weights then sum to < 1 and scale the network down (seen: 0.45 for a
    # run stopped 182 steps after its last snapshot). Synthesise at the last snapshot instead.
    step = min(step or last, last)
    found = [f for f in found if 0 < f[1] <= step]
    if not found:
        raise ValueError(f"{folder}: no EMA snapshot after any training step yet; train at least one step first")
    t = np.array([s for _, s, _ in found], np.float64)
    gammas = np.array([sigma_rel_to_gamma(sig) for sig, _, _ in found])
    weights = solve_weights(t, gammas, step, sigma_rel_to_gamma(sigma_rel))
    if abs(float(weights.sum()) - 1.0) > 0.02:
        raise ValueError(
            f"{folder}: the snapshots cannot express the EMA at sigma_rel {sigma_rel}, step {step} "
            f"(weights sum to {float(weights.sum()):.3f}, not 1); choose a sigma_rel within the tracked ones"
        )
    out: dict[str, Tensor] = {}
    for w, (_, _, path) in zip(weights, found):
        for k, v in load_file(str(path)).items():
            out[k] = out.get(k, 0) + float(w) * v.double()
    info = {"sigma_rel": sigma_rel, "step": step, "snapshots": len(found), "weights": json.dumps(weights.tolist())}
    return {k: v.float() for k, v in out.items()}, info
