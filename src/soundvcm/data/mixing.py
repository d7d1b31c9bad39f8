"""Mixing feature caches into training batches (§4.1: video-text-audio and text-audio sets with
roughly equal exposure).

Each step draws, for every row, a source set with probability proportional to its weight
(default: equal weights, i.e. equal exposure whatever the set sizes) and then a row of that set
uniformly. The draw for (step, micro-batch, rank) comes from its own seeded generator, so
sampling is deterministic per rank, needs no state to resume, and ranks never coordinate.
Text-audio rows get the network's null visual features. The latent is sampled afresh from the
stored posterior, x0 = mean + std * eps, and normalised with the network's statistics.
A set may keep a dropout group (``PATH:WEIGHT:keep=text``): its rows never lose that group on
their own (:attr:`soundvcm.conditions.Batch.kept`), e.g. clips whose caption names another
material than the picture shows, where the picture alone would teach the wrong sound.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch
from torch import Tensor

from soundvcm.conditions import Batch
from soundvcm.data.cache import CacheError, FeatureCache, check_compatible
from soundvcm.data.mmaudio_cache import MMAudioCache, is_mmaudio_cache


def open_cache(path) -> FeatureCache | MMAudioCache:
    return MMAudioCache(path) if is_mmaudio_cache(path) else FeatureCache(path)


def step_generator(seed: int, step: int, micro: int, rank: int, purpose: str = "data") -> torch.Generator:
    """A generator unique to (seed, step, micro-batch, rank, purpose)."""
    key = f"{purpose}:{seed}:{step}:{micro}:{rank}".encode()
    return torch.Generator().manual_seed(zlib.crc32(key) * 2654435761 % (2**63))


@dataclass
class MixedSource:
    caches: list
    weights: list[float]
    allow_mixed_encoders: bool = False
    keep: list[tuple[str, ...]] | None = None  # per cache: dropout groups its rows keep

    def __post_init__(self) -> None:
        if not self.caches:
            raise ValueError("no training data: pass at least one cache")
        if len(self.weights) != len(self.caches) or any(w <= 0 for w in self.weights):
            raise ValueError(f"need one positive weight per cache, got {self.weights}")
        self.keep = self.keep or [()] * len(self.caches)
        if len(self.keep) != len(self.caches):
            raise ValueError(f"need one keep list per cache, got {len(self.keep)} for {len(self.caches)}")
        check_compatible(self.caches, self.allow_mixed_encoders)
        for c in self.caches:
            if len(c) == 0:
                raise CacheError(f"{c.root}: no usable rows")

    @classmethod
    def open(cls, specs: list[str], allow_mixed_encoders: bool = False) -> MixedSource:
        """``PATH``, ``PATH:WEIGHT`` or ``PATH:WEIGHT:keep=GROUP[,GROUP]`` per cache."""
        caches, weights, keep = [], [], []
        for spec in specs:
            path, _, rest = str(spec).partition(":")
            weight, _, flags = rest.partition(":")
            try:
                weights.append(float(weight) if weight else 1.0)
            except ValueError:
                raise ValueError(f"{spec}: the weight after ':' must be a number") from None
            if flags and not flags.startswith("keep="):
                raise ValueError(f"{spec}: after the weight only keep=GROUP[,GROUP] is understood")
            keep.append(tuple(g for g in flags.removeprefix("keep=").split(",") if g))
            caches.append(open_cache(path))
        return cls(caches, weights, allow_mixed_encoders, keep)

    @property
    def meta(self):
        return self.caches[0].meta

    def draw(self, batch_size: int, generator: torch.Generator) -> list[tuple[int, int]]:
        probs = torch.tensor(self.weights, dtype=torch.float64)
        sources = torch.multinomial(probs / probs.sum(), batch_size, replacement=True, generator=generator)
        picks = []
        for s in sources.tolist():
            picks.append((s, int(torch.randint(len(self.caches[s]), (1,), generator=generator))))
        return picks

    @torch.no_grad()
    def latent_stats(self, rows: int, seed: int) -> tuple[Tensor, Tensor]:
        """Per-channel mean and std (clamped at 1e-3) of the posterior means of ``rows`` drawn rows
        (MMAudio's latent normalisation); every row() refuses NaN/inf, so no bad row poisons them."""
        picks = self.draw(max(min(rows, sum(len(c) for c in self.caches)), 2), torch.Generator().manual_seed(seed))
        means = torch.cat([self.caches[s].row(i)["mean"].float() for s, i in picks])
        return means.mean(0), means.std(0).clamp(min=1e-3)

    def batch(self, net, batch_size: int, generator: torch.Generator, device=None) -> Batch:
        """Rows drawn with ``generator``; x0 sampled from the posterior and normalised by ``net``."""
        picks = self.draw(batch_size, generator)
        rows = [self.caches[s].row(i) for s, i in picks]  # row() refuses NaN/inf
        mean = torch.stack([r["mean"] for r in rows]).float()
        std = torch.stack([r["std"] for r in rows]).float()
        eps = torch.randn(mean.shape, generator=generator)
        x0 = net.normalize((mean + std * eps).to(device))
        null = net.null_conditions(batch_size)  # learned: text-audio rows train the null visual features
        has_video = torch.tensor(["clip" in r for r in rows], device=null["clip"].device)
        conditions = {"text": torch.stack([r["text"] for r in rows]).float().to(null["text"].device)}
        for key in ("clip", "sync"):
            stacked = torch.stack([r[key] if key in r else torch.zeros(null[key].shape[1:]) for r in rows]).float()
            stacked = stacked.to(null[key].device)
            conditions[key] = torch.where(has_video.view(-1, 1, 1), stacked, null[key])
        keep = self.keep or []
        named = {g for k in keep for g in k}
        if named - set(net.condition_groups):
            groups = sorted(net.condition_groups)
            raise ValueError(f"keep={','.join(sorted(named - set(groups)))}: the network's groups are {groups}")
        kept = {g: torch.tensor([g in keep[s] for s, _ in picks]) for g in named}
        return Batch(x0=x0, conditions=conditions, kept=kept)


def exposure(source: MixedSource, draws: int, seed: int = 0) -> Tensor:
    """Fraction of rows drawn from each set over ``draws`` rows (for checking the weights)."""
    counts = torch.zeros(len(source.caches))
    g = torch.Generator().manual_seed(seed)
    for s, _ in source.draw(draws, g):
        counts[s] += 1
    return counts / draws
