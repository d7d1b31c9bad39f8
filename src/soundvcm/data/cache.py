"""Feature caches: sharded safetensors files, memory-mapped on read, plus one ``meta.json``.

Layout of a cache directory::

    meta.json                 encoder set, weight hashes, sample rate, fps, duration, dimensions,
                              sequence lengths, rows per shard, number of rows, has_video, and the
                              precision the encoders ran in (soundvcm.precision; {} = before it was
                              recorded: those caches were made with bf16 lite visual features)
    shard_00000.safetensors   rows [0, R): mean, std (N, L, C) latent posterior; clip (N, Nc, Dc)
    shard_00001.safetensors   and sync (N, Ns, Ds) when has_video; text (N, 77, Dt); the row ids,
    ...                       captions and a "valid" flag per row in the file's metadata

Shards are written atomically and independently, so extraction resumes by skipping complete
shards and runs in parallel (rank r writes shards r, r + W, ...). Latents are stored as the
posterior mean and std and sampled afresh every step (MMAudio's recipe). Caches whose metadata
disagree (encoder set, dimensions, rates, duration) are refused together.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor

from soundvcm.atomic import atomic_write, save_tensors

FORMAT = 1
KEYS_VIDEO = ("mean", "std", "clip", "sync", "text")
KEYS_AUDIO = ("mean", "std", "text")
MATCH_FIELDS = (
    "encoder_set",
    "sample_rate",
    "clip_fps",
    "sync_fps",
    "duration",
    "latent_shape",
    "clip_shape",
    "sync_shape",
    "text_shape",
)


class CacheError(ValueError):
    """A cache that is missing, corrupt or incompatible; the message names the file."""


@dataclass
class CacheMeta:
    encoder_set: str
    sample_rate: int
    clip_fps: float
    sync_fps: float
    duration: float
    latent_shape: list[int]  # (L, C)
    clip_shape: list[int]  # (Nc, Dc)
    sync_shape: list[int]  # (Ns, Ds)
    text_shape: list[int]  # (77, Dt)
    has_video: bool
    rows: int
    rows_per_shard: int
    weight_hashes: dict[str, str] = field(default_factory=dict)
    precision: dict = field(default_factory=dict)  # PrecisionPlan.to_dict() of the extraction
    source: str = "soundvcm"
    format: int = FORMAT

    @property
    def num_shards(self) -> int:
        return (self.rows + self.rows_per_shard - 1) // self.rows_per_shard

    def save(self, root: Path) -> None:
        atomic_write(root / "meta.json", lambda tmp: tmp.write_text(json.dumps(asdict(self), indent=2)))

    @classmethod
    def load(cls, root: Path) -> CacheMeta:
        path = root / "meta.json"
        if not path.is_file():
            raise CacheError(f"{root}: not a feature cache (no meta.json)")
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise CacheError(f"{path}: unreadable cache metadata ({exc})") from exc

    def compatible(self, other: CacheMeta) -> list[str]:
        """The fields on which two caches disagree (video presence may differ)."""
        return [
            f"{k}: {getattr(self, k)} vs {getattr(other, k)}"
            for k in MATCH_FIELDS
            if getattr(self, k) != getattr(other, k)
        ]


def shard_path(root: Path, index: int) -> Path:
    return root / f"shard_{index:05d}.safetensors"


def write_shard(
    root: Path, index: int, tensors: dict[str, Tensor], ids: list[str], captions: list[str], valid: list[bool]
) -> Path:
    path = shard_path(root, index)
    meta = {"ids": json.dumps(ids), "captions": json.dumps(captions), "valid": json.dumps(valid)}
    data = {k: v.contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_tensors(tmp, data, metadata=meta))
    return path


class FeatureCache:
    """Random access to the rows of one cache (memory-mapped shards, opened lazily)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.meta = CacheMeta.load(self.root)
        self.keys = KEYS_VIDEO if self.meta.has_video else KEYS_AUDIO
        self._handles: dict[int, object] = {}
        self._valid: list[int] | None = None

    def _open(self, shard: int):
        if shard not in self._handles:
            path = shard_path(self.root, shard)
            if not path.is_file():
                raise CacheError(f"{path}: missing shard (extraction not finished? rerun `soundvcm extract` to resume)")
            try:
                handle = safe_open(str(path), "pt")
                metadata = handle.metadata() or {}
                json.loads(metadata["ids"])
                names = set(handle.keys())
                missing = [k for k in self.keys if k not in names]
            except Exception as exc:
                raise CacheError(
                    f"{path}: corrupt shard ({exc.__class__.__name__}: {exc}); delete it and rerun extract"
                ) from exc
            if missing:
                raise CacheError(f"{path}: corrupt shard (no {missing})")
            self._handles[shard] = handle
        return self._handles[shard]

    def shard_info(self, shard: int) -> tuple[list[str], list[str], list[bool]]:
        m = self._open(shard).metadata()
        return json.loads(m["ids"]), json.loads(m["captions"]), json.loads(m["valid"])

    @property
    def valid_rows(self) -> list[int]:
        """Global indices of rows that extracted successfully (silent/unreadable media are flagged)."""
        if self._valid is None:
            rows = []
            for s in range(self.meta.num_shards):
                _, _, valid = self.shard_info(s)
                base = s * self.meta.rows_per_shard
                rows += [base + i for i, ok in enumerate(valid) if ok]
            self._valid = rows
        return self._valid

    def __len__(self) -> int:
        return len(self.valid_rows)

    def row(self, index: int) -> dict[str, Tensor]:
        """Row ``index`` (into valid rows): the stored tensors, each without a batch dimension."""
        global_index = self.valid_rows[index]
        shard, offset = divmod(global_index, self.meta.rows_per_shard)
        handle = self._open(shard)
        try:
            row = {k: handle.get_slice(k)[offset : offset + 1][0] for k in self.keys}
        except Exception as exc:
            raise CacheError(f"{shard_path(self.root, shard)}: corrupt shard ({exc})") from exc
        check_finite(row, lambda: f"{shard_path(self.root, shard)}: row {offset} ({self.shard_info(shard)[0][offset]})")
        return row


def check_finite(row: dict[str, Tensor], where: str | Callable[[], str]) -> None:
    """Refuse a cache row holding NaN/inf, naming it. Extraction never writes one (such rows are
    marked invalid), so this finds damaged or foreign caches when a row is read: cheap, unlike
    scanning a whole cache at start-up."""
    bad = [k for k, v in row.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        where = where() if callable(where) else where
        raise CacheError(f"{where} holds NaN/inf in {', '.join(bad)}; re-extract it (delete its shard, rerun extract)")


def check_compatible(caches: list, allow_mixed_encoders: bool = False) -> None:
    """Refuse to mix caches whose metadata disagree, naming both and the fields. Caches whose
    encoder weight files differ (md5s recorded at extraction; caches without them are not
    compared) are refused too, unless ``allow_mixed_encoders``."""
    first = caches[0]
    for other in caches[1:]:
        diff = first.meta.compatible(other.meta)
        if diff:
            raise CacheError(f"caches {first.root} and {other.root} do not match: " + "; ".join(diff))
        a, b = first.meta.weight_hashes, other.meta.weight_hashes
        if a and b and a != b and not allow_mixed_encoders:
            files = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            raise CacheError(
                f"caches {first.root} and {other.root} were extracted with different encoder weights "
                f"({', '.join(files)}); re-extract one, or pass --allow-mixed-encoders"
            )


def subset_cache(source: str | Path, out: str | Path, keep: Callable[[str, str], bool]) -> int:
    """Write the valid rows of the cache at ``source`` for which ``keep(id, caption)`` holds as a new
    cache at ``out`` (same metadata but the row count; shards written atomically, meta.json last, so
    an interrupted run leaves no cache that reads as complete). Returns the rows kept; none is an
    error."""
    cache, out = FeatureCache(source), Path(out)
    if (out / "meta.json").exists():
        raise CacheError(f"{out}: a cache is already there; give a new folder")
    per = cache.meta.rows_per_shard
    rows: list[dict[str, Tensor]] = []
    ids: list[str] = []
    captions: list[str] = []
    written = 0

    def flush() -> None:
        nonlocal written
        if rows:
            tensors = {k: torch.stack([r[k] for r in rows]) for k in cache.keys}
            write_shard(out, written // per, tensors, list(ids), list(captions), [True] * len(rows))
            written += len(rows)
            rows.clear()
            ids.clear()
            captions.clear()

    out.mkdir(parents=True, exist_ok=True)
    for shard in range(cache.meta.num_shards):
        names, texts, valid = cache.shard_info(shard)
        for offset, (name, caption, ok) in enumerate(zip(names, texts, valid)):
            if ok and keep(name, caption):
                handle = cache._open(shard)
                rows.append({k: handle.get_slice(k)[offset : offset + 1][0] for k in cache.keys})
                ids.append(name)
                captions.append(caption)
                if len(rows) == per:
                    flush()
    flush()
    if not written:
        raise CacheError(f"{source}: no row was kept")
    replace(cache.meta, rows=written).save(out)
    return written
