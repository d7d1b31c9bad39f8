"""Dataset-scale extraction and batch generation on Ray Data (``--engine ray``; extra ``[scale]``).

Both read the manifest as a Ray dataset and run two stages, streamed (Ray's executor keeps only
a bounded number of blocks in flight, whatever the dataset's size):

    rows --map (CPU tasks: decode audio/video with PyAV)--> decoded frames and waveforms
         --map_batches (actor pool: encoders / the pipeline loaded once per actor; a GPU each
           when there are GPUs)--> features / written outputs

Extraction then writes the same shard files as the local engine (:mod:`soundvcm.data.extract`:
the same decode and encode functions, row by row), from the driver, one shard as soon as its
rows are in (order preserved); generation writes each job's flac/mp4 from its actor with the
local engine's :func:`~soundvcm.generate.run_job`. Runs resume (complete shards and existing
outputs are left out before the dataset is built), and a row that fails is reported and stored
as invalid (extraction) or counted as failed (generation), never fatal.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

MISSING = "the ray engine needs Ray Data, which is not installed: pip install 'soundvcm[scale]' (or 'ray[data]')"


def require_ray():
    """Ray, or a one-line error saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ValueError(MISSING) from exc
    return ray


def init_ray(address: str | None = None, num_cpus: int | None = None):
    """Join ``address`` (a running cluster) or start a local instance; reuse one already started."""
    ray = require_ray()
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address:
            kwargs["address"] = address
        else:
            kwargs["num_cpus"] = num_cpus or os.cpu_count()
        ray.init(**kwargs)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # shards complete one after another (bounded buffers)
    ctx.enable_progress_bars = False
    return ray


@dataclass(frozen=True)
class Plan:
    """How the cluster's CPUs (and GPUs) are split between the two stages."""

    decoders: int  # decode workers
    decoder_cpus: float  # Ray CPUs reserved by each
    actors: int  # model actors
    actor_cpus: float
    threads: int  # torch threads per actor
    gpus: float  # per actor


def plan(cpus: float, gpus: int, actors: int | None = None) -> Plan:
    """A quarter of the CPUs (at least half of one) decode; the models get the rest: one actor per
    GPU, else one per 8 CPUs, each with torch threads for its share (measured here: the lite
    encoders take 1.15 s per 8 s row on one thread, 0.62 s on two, decoding 0.2 s)."""
    decode_total = max(0.5, cpus / 4)
    decoders = max(1, int(decode_total))
    n = actors or gpus or max(1, int((cpus - decode_total) // 8))
    share = max(0.5, (cpus - decode_total) / n)
    return Plan(decoders, decode_total / decoders, n, share, max(1, round(share)), 1.0 if gpus else 0.0)


def _plan(ray, actors: int | None) -> Plan:
    resources = ray.cluster_resources()
    return plan(float(resources.get("CPU", 1)), int(resources.get("GPU", 0)), actors)


def _actors(ray, size: int):
    return ray.data.ActorPoolStrategy(size=size)


# ----- extraction ---------------------------------------------------------------------------
class _Decode:
    """CPU stage of extraction: one row's waveform and frames, or the reason it is unusable."""

    def __init__(self, encoder_set: str, duration: float, has_video: bool):
        from soundvcm.encoders import encoder_spec

        spec = encoder_spec(encoder_set)
        self.seq = spec.sequence.with_duration(duration)
        self.specs = {"clip": spec.clip_frames, "sync": spec.sync_frames}
        self.has_video = has_video

    def __call__(self, row: dict) -> dict:
        from soundvcm.data.extract import decode_row

        torch.set_num_threads(1)
        decoded = decode_row(Path(row["path"]), self.seq, self.specs, self.has_video)
        error = decoded if isinstance(decoded, str) else ""
        arrays = {} if error else {k: v.numpy() for k, v in decoded.items()}  # type: ignore[union-attr]
        return {**row, "error": error, "decoded": arrays}


class _Encode:
    """Actor stage of extraction: the encoder set, loaded once, applied row by row."""

    def __init__(self, encoder_set: str, meta: dict, threads: int, precision: str = "auto"):
        from soundvcm.data.cache import CacheMeta
        from soundvcm.encoders import load_encoder_set

        torch.set_num_threads(threads)
        self.meta = CacheMeta(**meta)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.encoders = load_encoder_set(encoder_set, device=device, precision=precision)

    def __call__(self, batch: dict) -> dict:
        from soundvcm.data.extract import encode_row

        features, errors = [], []
        for error, decoded, caption in zip(batch["error"], batch["decoded"], batch["caption"]):
            row: dict | str = str(error)
            if not error:
                try:
                    row = encode_row(
                        self.encoders, {k: torch.from_numpy(v) for k, v in decoded.items()}, caption, self.meta
                    )
                except (ValueError, RuntimeError) as exc:  # a row the encoders refuse: reported, not fatal
                    row = f"encoder error: {exc}"
            features.append({} if isinstance(row, str) else {k: v.numpy() for k, v in row.items()})
            errors.append(row if isinstance(row, str) else "")
        return {
            "shard": batch["shard"],
            "index": batch["index"],
            "path": batch["path"],
            "caption": batch["caption"],
            "error": errors,
            "features": features,
        }


def extract_ray(
    tsv: Path,
    out: Path,
    encoder_set: str = "lite",
    duration: float = 8.0,
    rows_per_shard: int = 64,
    address: str | None = None,
    num_cpus: int | None = None,
    actors: int | None = None,
    precision: str = "auto",
):
    """:func:`soundvcm.data.extract.extract` on Ray Data: same cache, same shards, same rows."""
    from soundvcm.data.cache import shard_path
    from soundvcm.data.extract import _check_or_save_meta, _meta, finish_extraction, read_tsv
    from soundvcm.encoders import encoder_spec
    from soundvcm.precision import resolve_precision

    ray = init_ray(address, num_cpus)
    rows = read_tsv(Path(tsv))
    spec = encoder_spec(encoder_set)
    plan = resolve_precision(precision, "cuda" if torch.cuda.is_available() else "cpu", ("visual", "text"))
    seq = spec.sequence.with_duration(duration)
    meta = _meta(rows, spec, seq, encoder_set, duration, rows_per_shard, False, plan)
    out = Path(out)
    _check_or_save_meta(out, meta, 0)
    todo = [s for s in range(meta.num_shards) if not shard_path(out, s).is_file()]
    items = [
        {"shard": s, "index": i, "path": str(rows[i][0]), "caption": rows[i][1]}
        for s in todo
        for i in range(s * rows_per_shard, min(len(rows), (s + 1) * rows_per_shard))
    ]
    if items:
        split = _plan(ray, actors)
        ds = ray.data.from_items(items, override_num_blocks=max(1, len(items) // 4))
        decode = dict(encoder_set=encoder_set, duration=duration, has_video=meta.has_video)
        ds = ds.map(
            _Decode, fn_constructor_kwargs=decode, compute=_actors(ray, split.decoders), num_cpus=split.decoder_cpus
        )
        encode = dict(encoder_set=encoder_set, meta=asdict(meta), threads=split.threads, precision=precision)
        ds = ds.map_batches(
            _Encode,
            fn_constructor_kwargs=encode,
            batch_size=4,
            compute=_actors(ray, split.actors),
            num_cpus=split.actor_cpus,
            num_gpus=split.gpus,
        )
        _write_shards(ds, out, meta, len(items))
    return meta, finish_extraction(out, meta, tsv)


def _write_shards(ds, out: Path, meta, total: int) -> None:
    """Collect streamed rows per shard; write each shard once all its rows are in."""
    from soundvcm.data.cache import write_shard
    from soundvcm.data.extract import empty_row

    pending: dict[int, dict[int, dict]] = {}
    sizes = {s: min(meta.rows_per_shard, meta.rows - s * meta.rows_per_shard) for s in range(meta.num_shards)}
    bar = tqdm(total=total, desc="extract (ray)", unit="clip", file=sys.stderr)
    for row in ds.iter_rows():
        shard = int(row["shard"])
        if row["error"]:
            tqdm.write(f"extract: skipping {row['path']}: {row['error']}", file=sys.stderr)
        pending.setdefault(shard, {})[int(row["index"])] = row
        bar.update(1)
        if len(pending[shard]) < sizes[shard]:
            continue
        got = pending.pop(shard)
        done = [got[i] for i in sorted(got)]
        zeros = empty_row(meta)
        tensors = {
            k: torch.stack([torch.from_numpy(r["features"][k]) if not r["error"] else zeros[k] for r in done])
            for k in zeros
        }
        ids = [Path(r["path"]).stem for r in done]
        write_shard(out, shard, tensors, ids, [r["caption"] for r in done], [not r["error"] for r in done])
    bar.close()


# ----- batch generation ---------------------------------------------------------------------
class _DecodeJob:
    """CPU stage of generation: a job's video frames at the model's rates (None for other jobs)."""

    def __init__(self, encoder_set: str, duration: float, start: float):
        from soundvcm.encoders import encoder_spec

        spec = encoder_spec(encoder_set)
        self.specs = {"clip": spec.clip_frames, "sync": spec.sync_frames}
        self.duration, self.start = duration, start

    def __call__(self, row: dict) -> dict:
        import warnings

        from soundvcm.media.errors import MediaError
        from soundvcm.media.video import load_video

        torch.set_num_threads(1)
        decoded, error = None, ""
        if row["video"]:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the pipeline reports clip.warnings
                    decoded = load_video(row["video"], self.specs, duration=self.duration, start=self.start)
            except (MediaError, OSError, ValueError) as exc:
                error = str(exc)
        return {**row, "decoded": decoded, "error": error}


class _Generate:
    """Actor stage of generation: the pipeline, loaded once; each job written as the local engine does."""

    def __init__(self, model: str, out_dir: str, request, threads: int, precision: str = "auto"):
        from soundvcm.pipeline import Pipeline

        torch.set_num_threads(threads)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.pipe = Pipeline.load(model, device=device, precision=precision)
        self.out_dir, self.request = Path(out_dir), request  # a soundvcm.generate.GenerateRequest

    def __call__(self, batch: dict) -> dict:
        from soundvcm.generate import Job, run_job

        written, notes, errors = [], [], []
        for i, name in enumerate(batch["name"]):
            paths: list[str] = []
            note: list[str] = []
            error = str(batch["error"][i])
            if not error:
                job = Job(
                    str(name),
                    Path(batch["video"][i]) if batch["video"][i] else None,
                    Path(batch["image"][i]) if batch["image"][i] else None,
                    batch["prompt"][i] or None,
                    float(batch["length"][i]) if batch["length"][i] >= 0 else None,
                )
                try:
                    decoded = batch["decoded"][i] if job.video else None
                    result, out = run_job(self.pipe, job, self.out_dir, self.request, decoded)
                    paths, note = [str(p) for p in out], list(result.warnings)
                except (ValueError, OSError) as exc:
                    error = str(exc)
            written.append(paths)
            notes.append(note)
            errors.append(error)
        return {"name": batch["name"], "written": written, "warnings": notes, "error": errors}


def generate_ray(
    model: str,
    jobs: list,
    out_dir: Path,
    request,
    address: str | None = None,
    num_cpus: int | None = None,
    actors: int | None = None,
    failed: int = 0,
    precision: str = "auto",
) -> int:
    """:func:`soundvcm.generate.run_generate` on Ray Data: the same outputs; exit status 1 if a job failed.
    ``request`` (a :class:`soundvcm.generate.GenerateRequest`) must name its duration: clips are
    decoded to a fixed length by CPU workers before the actors generate them."""
    from soundvcm.pipeline import Pipeline

    ray = init_ray(address, num_cpus)
    spec, _ = Pipeline.peek(model)
    items = [
        {
            "name": j.name,
            "video": str(j.video or ""),
            "image": str(j.image or ""),
            "prompt": j.prompt or "",
            "length": -1.0 if j.length is None else float(j.length),
        }
        for j in jobs
    ]
    split = _plan(ray, actors)
    out_dir.mkdir(parents=True, exist_ok=True)
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items) // 2))
    decode = dict(encoder_set=spec.encoder_set, duration=request.duration, start=request.start)
    ds = ds.map(
        _DecodeJob, fn_constructor_kwargs=decode, compute=_actors(ray, split.decoders), num_cpus=split.decoder_cpus
    )
    generate = dict(model=str(model), out_dir=str(out_dir), request=request, threads=split.threads, precision=precision)
    ds = ds.map_batches(
        _Generate,
        fn_constructor_kwargs=generate,
        batch_size=1,
        compute=_actors(ray, split.actors),
        num_cpus=split.actor_cpus,
        num_gpus=split.gpus,
    )
    total = len(jobs) + failed
    bar = tqdm(total=len(jobs), desc="generate (ray)", unit="clip", file=sys.stderr, disable=len(jobs) == 1)
    for row in ds.iter_rows():
        bar.update(1)
        if row["error"]:
            failed += 1
            tqdm.write(f"soundvcm: error: {row['name']}: {row['error']}", file=sys.stderr)
            continue
        for note in row["warnings"]:
            tqdm.write(f"soundvcm: warning: {row['name']}: {note}", file=sys.stderr)
        tqdm.write(f"{row['name']}: -> {', '.join(row['written'])}")
    bar.close()
    if failed:
        print(f"soundvcm: {failed} of {total} job(s) failed", file=sys.stderr)
        return 1
    return 0
