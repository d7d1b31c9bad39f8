"""``soundvcm extract``: media listed in a TSV -> a sharded feature cache (:mod:`.cache`).

TSV rows are ``path<TAB>caption`` (a header row starting with ``path`` or ``id`` is skipped;
relative paths are relative to the TSV). A set is video-text-audio if its first readable file
has a video stream, text-audio otherwise. Per row, as in MMAudio's training extraction: the
first ``duration`` seconds of audio, resampled with soxr, zero-padded to a whole number of
latents, peak-normalised to 0.95; silent clips (peak < 1e-6), unreadable files and videos
shorter than ``duration`` are kept as *invalid* rows (reported, skipped by training). Latents
are stored as posterior (mean, std); visual/sync frames and captions go through the encoder set.

Resumable (complete shards are skipped) and parallel: under ``torchrun`` each rank writes the
shards ``rank, rank + world, ...``; no process group is needed.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch
from tqdm import tqdm

from soundvcm.atomic import remove_stale
from soundvcm.data.cache import CacheError, CacheMeta, shard_path, write_shard
from soundvcm.device import dist_info
from soundvcm.encoders import encoder_spec, load_encoder_set
from soundvcm.encoders.base import take_frames
from soundvcm.media.audio import load_audio
from soundvcm.media.errors import MediaError
from soundvcm.media.video import load_video, probe
from soundvcm.precision import PrecisionPlan, resolve_precision
from soundvcm.weights import md5sum


def read_tsv(path: Path) -> list[tuple[Path, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such TSV file")
    rows = []
    for i, line in enumerate(path.read_text().splitlines()):
        if not line.strip() or (i == 0 and line.split("\t")[0].strip().lower() in ("path", "id", "video", "audio")):
            continue
        cols = line.split("\t")
        media = Path(cols[0].strip())
        media = media if media.is_absolute() else path.parent / media
        rows.append((media, cols[1].strip() if len(cols) > 1 else ""))
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def weight_hashes(encoder_set: str) -> dict[str, str]:
    """md5 of every weight file the encoder set reads (recorded so caches never mix encoders)."""
    files = encoder_spec(encoder_set).weight_files
    if files is None:
        return {}
    return {k: md5sum(v) if isinstance(v, Path) else str(v) for k, v in files().items()}


def _has_video(path: Path) -> bool:
    try:
        probe(path)
        return True
    except MediaError:
        return False


def _meta(
    rows, spec, seq, encoder_set: str, duration: float, rows_per_shard: int, custom: bool, precision: PrecisionPlan
) -> CacheMeta:
    has_video = next((_has_video(p) for p, _ in rows if p.is_file()), False)
    return CacheMeta(
        encoder_set=encoder_set,
        sample_rate=seq.sample_rate,
        clip_fps=seq.clip_fps,
        sync_fps=seq.sync_fps,
        duration=duration,
        latent_shape=[seq.latent_seq_len, spec.latent_dim],
        clip_shape=[seq.clip_seq_len, spec.clip_dim],
        sync_shape=[seq.sync_seq_len, spec.sync_dim],
        text_shape=[spec.text_seq_len, spec.text_dim],
        has_video=has_video,
        rows=len(rows),
        rows_per_shard=rows_per_shard,
        weight_hashes={"custom": "test"} if custom else weight_hashes(encoder_set),
        precision=precision.to_dict(),
    )


def _check_or_save_meta(out: Path, meta: CacheMeta, rank: int) -> None:
    """A rerun must be the same extraction (it resumes); rank 0 writes a new cache's meta.json."""
    if (out / "meta.json").is_file():
        old = CacheMeta.load(out)
        diff = old.compatible(meta) + [
            f"{k}: {getattr(old, k)} vs {getattr(meta, k)}"
            for k in ("rows", "rows_per_shard", "has_video", "weight_hashes")
            if getattr(old, k) != getattr(meta, k)
        ]
        if diff:
            raise CacheError(f"{out} holds a different extraction ({'; '.join(diff)}); use another --out")
        was, now = old.precision.get("stages"), meta.precision.get("stages")
        if was is not None and was != now:  # shards of one cache come from one precision
            choice = "bf16" if "bf16" in was.values() else "fp32"
            raise CacheError(
                f"{out} was extracted with {was}, this run would use {now}: resume it with --precision {choice}, "
                "or use another --out"
            )
    elif rank == 0:
        meta.save(out)


def _extract_shard(out: Path, shard: int, chunk, encoders, seq, specs, meta: CacheMeta, bar) -> None:
    tensors: dict[str, list[torch.Tensor]] = {k: [] for k in ("mean", "std", "clip", "sync", "text")}
    ids, captions, valid = [], [], []
    for path, caption in chunk:
        row, ok = _extract_row(encoders, path, caption, seq, specs, meta.has_video, meta)
        for k, v in row.items():
            tensors[k].append(v)
        ids.append(path.stem)
        captions.append(caption)
        valid.append(ok)
        bar.update(1)
    stacked = {k: torch.stack(v) for k, v in tensors.items() if v}
    write_shard(out, shard, stacked, ids, captions, valid)


def extract(
    tsv: Path,
    out: Path,
    encoder_set: str = "lite",
    duration: float = 8.0,
    rows_per_shard: int = 64,
    rank: int | None = None,
    world: int | None = None,
    device: str = "cpu",
    encoders=None,
    precision: str = "auto",
) -> tuple[CacheMeta, int | None]:
    """Extract every shard assigned to this rank; returns the cache metadata and, once every shard
    exists, the number of usable rows (a cache without one is an error). ``precision``: what the
    encoders run in (auto, fp32, bf16; :mod:`soundvcm.precision`), recorded in the cache."""
    env_rank, env_world, _ = dist_info()
    rank = env_rank if rank is None else rank
    world = env_world if world is None else world
    rows = read_tsv(Path(tsv))
    spec = encoder_spec(encoder_set)
    seq = spec.sequence.with_duration(duration)
    plan = resolve_precision(precision, device, ("visual", "text"))
    meta = _meta(rows, spec, seq, encoder_set, duration, rows_per_shard, encoders is not None, plan)
    out = Path(out)
    if rank == 0:
        remove_stale(out)  # shards a killed run was writing
    _check_or_save_meta(out, meta, rank)
    if encoders is None:
        encoders = load_encoder_set(encoder_set, device=device, precision=plan)
    else:
        encoders.set_precision(plan)
    specs = {"clip": spec.clip_frames, "sync": spec.sync_frames}
    mine = [s for s in range(meta.num_shards) if s % world == rank and not shard_path(out, s).is_file()]
    todo = sum(min(rows_per_shard, len(rows) - s * rows_per_shard) for s in mine)
    bar = tqdm(total=todo, desc=f"extract (rank {rank}/{world})", unit="clip", file=sys.stderr, disable=todo == 0)
    for shard in mine:
        _extract_shard(
            out, shard, rows[shard * rows_per_shard : (shard + 1) * rows_per_shard], encoders, seq, specs, meta, bar
        )
    bar.close()
    return meta, finish_extraction(out, meta, tsv)


def finish_extraction(out: Path, meta: CacheMeta, tsv: Path) -> int | None:
    """The number of usable rows once every shard exists (None before); none usable is an error."""
    if not all(shard_path(out, s).is_file() for s in range(meta.num_shards)):
        return None  # other ranks are still writing theirs
    from soundvcm.data.cache import FeatureCache

    usable = len(FeatureCache(out))
    if usable == 0:
        raise CacheError(
            f"{out}: no usable row: every file in {tsv} was unreadable, silent, too short or gave NaN/inf "
            "features (see the messages above)"
        )
    return usable


def empty_row(meta: CacheMeta) -> dict[str, torch.Tensor]:
    """The zeros an unusable row is stored as."""
    keys = ("mean", "std", "text") + (("clip", "sync") if meta.has_video else ())
    shapes = {
        "mean": meta.latent_shape,
        "std": meta.latent_shape,
        "text": meta.text_shape,
        "clip": meta.clip_shape,
        "sync": meta.sync_shape,
    }
    return {k: torch.zeros(shapes[k]) for k in keys}


def decode_row(path: Path, seq, specs, has_video: bool) -> dict[str, torch.Tensor] | str:
    """CPU work of a row: the peak-normalised, padded waveform and the frames the encoders need;
    or why the row is unusable (a one-line reason)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wave, _ = load_audio(path, seq.sample_rate, duration=seq.duration)
            decoded = {}
            if has_video:
                clip = load_video(path, specs, duration=seq.duration)
                if clip.truncated:
                    raise MediaError(f"video shorter than {seq.duration} s")
                decoded["clip_frames"] = clip.frames["clip"][: seq.clip_seq_len]
                decoded["sync_frames"] = take_frames(clip.frames["sync"], seq.sync_frames_needed)
    except (MediaError, OSError, ValueError) as exc:
        return str(exc)
    peak = wave.abs().max() if wave.numel() else torch.tensor(0.0)
    if peak < 1e-6:
        return "silent"
    n_samples = seq.num_audio_samples
    decoded["wave"] = torch.nn.functional.pad(wave, (0, max(0, n_samples - wave.numel())))[:n_samples] * (0.95 / peak)
    return decoded


def encode_row(encoders, decoded: dict[str, torch.Tensor], caption: str, meta: CacheMeta) -> dict | str:
    """Encoder work of a decoded row: its features (float32, CPU), or why they are unusable."""
    row: dict[str, torch.Tensor] = {}
    if "clip_frames" in decoded:
        row["clip"] = encoders.encode_clip(decoded["clip_frames"][None])[0]
        row["sync"] = encoders.encode_sync(decoded["sync_frames"][None])[0]
    mean, std = encoders.encode_audio(decoded["wave"][None])
    row["mean"], row["std"] = mean[0, : meta.latent_shape[0]].cpu(), std[0, : meta.latent_shape[0]].cpu()
    row["text"] = encoders.encode_text([caption])[0].cpu()
    row = {k: v.float().cpu() for k, v in row.items()}
    bad = [k for k, v in row.items() if not torch.isfinite(v).all()]
    if bad:
        return f"NaN/inf in its {', '.join(bad)} features"
    return row


def _extract_row(encoders, path: Path, caption: str, seq, specs, has_video: bool, meta: CacheMeta):
    """One row's tensors and whether it is usable (zeros with ok=False when it is not)."""
    decoded = decode_row(path, seq, specs, has_video)
    row = encode_row(encoders, decoded, caption, meta) if isinstance(decoded, dict) else decoded
    if isinstance(row, str):
        tqdm.write(f"extract: skipping {path}: {row}", file=sys.stderr)
        return empty_row(meta), False
    return row, True
