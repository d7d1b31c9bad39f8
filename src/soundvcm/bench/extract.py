"""``soundvcm bench extract``: extraction throughput and peak memory as the dataset grows.

A small set of synthetic clips (moving shapes, a click track; ``base_rows`` distinct files) is
listed ``scale`` times over in a TSV (x1, x10, x100 by default), and each engine extracts it into
a fresh cache in its own process, ``soundvcm extract``, exactly as a user runs it. Per run: wall
time (Ray's start-up included), rows/s, and the peak RSS of that process, read from the kernel
when it exits (``wait4``). For the Ray engine that is the driver's: the decode tasks and encoder
actors are processes of the Ray instance, reported by Ray itself, not here. The caches are
compared after the largest run (same rows, same tensors within float tolerance).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ExtractBenchConfig:
    base_rows: int = 4
    scales: tuple[int, ...] = (1, 10, 100)
    engines: tuple[str, ...] = ("local", "ray")
    duration: float = 8.0
    rows_per_shard: int = 64
    cpus: int = 2
    precision: str = "auto"


def _clips(folder: Path, n: int, duration: float) -> list[Path]:
    from soundvcm.data.demo import synthetic_clip

    return [synthetic_clip(folder / f"clip{i}.mp4", duration=duration + 0.5, size=(320, 240)) for i in range(n)]


def _run(cmd: list[str], env: dict) -> tuple[float, float, int]:
    """(seconds, peak RSS MiB of the process, exit status)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - start, usage.ru_maxrss / 1024, proc.returncode


def run_extract_bench(cfg: ExtractBenchConfig, progress=None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clips = _clips(root, cfg.base_rows, cfg.duration)
        for scale in cfg.scales:
            tsv = root / f"x{scale}.tsv"
            tsv.write_text("".join(f"{c}\tclip {i % cfg.base_rows}\n" for i, c in enumerate(clips * scale)))
            for engine in cfg.engines:
                out = root / f"cache_{engine}_x{scale}"
                cmd = [
                    sys.executable,
                    "-m",
                    "soundvcm.cli",
                    "extract",
                    "--input",
                    str(tsv),
                    "--out",
                    str(out),
                    "--duration",
                    str(cfg.duration),
                    "--rows-per-shard",
                    str(cfg.rows_per_shard),
                    "--precision",
                    cfg.precision,
                ]
                if engine == "ray":
                    cmd += ["--engine", "ray", "--ray-cpus", str(cfg.cpus)]
                seconds, rss, code = _run(cmd, env)
                n = cfg.base_rows * scale
                row = {
                    "engine": engine,
                    "scale": scale,
                    "rows": n,
                    "seconds": seconds,
                    "rows_per_s": n / seconds,
                    "peak_rss_mb": rss,
                    "exit": code,
                    "precision": _cache_precision(out),
                }
                rows.append(row)
                if progress is not None:
                    progress(row)
        top = max(cfg.scales)
        if len(cfg.engines) > 1:
            for row in rows:
                if row["scale"] == top and row["engine"] != cfg.engines[0]:
                    row["max_abs_diff"] = _compare(
                        root / f"cache_{cfg.engines[0]}_x{top}", root / f"cache_{row['engine']}_x{top}"
                    )
        shutil.rmtree(root, ignore_errors=True)
    return rows


def _cache_precision(cache: Path) -> dict:
    """The precision the extraction recorded in its cache ({} if it wrote none)."""
    from soundvcm.data.cache import CacheError, CacheMeta

    try:
        return CacheMeta.load(cache).precision
    except CacheError:
        return {}


def _compare(a: Path, b: Path) -> float:
    """The largest difference between two caches' tensors (inf if their rows differ)."""
    from soundvcm.data.cache import FeatureCache

    ca, cb = FeatureCache(a), FeatureCache(b)
    if len(ca) != len(cb):
        return float("inf")
    worst = 0.0
    for i in range(len(ca)):
        ra, rb = ca.row(i), cb.row(i)
        worst = max([worst] + [float((ra[k] - rb[k]).abs().max()) for k in ra])
    return worst


def table(rows: list[dict[str, Any]], cfg: ExtractBenchConfig) -> str:
    first = {(r["engine"]): r for r in rows if r["scale"] == min(cfg.scales)}
    local = {r["scale"]: r for r in rows if r["engine"] == "local"}
    lines = [
        f"## Extraction, {cfg.base_rows} distinct {cfg.duration:g} s clips listed x{', x'.join(map(str, cfg.scales))}, "
        f"lite encoders, {cfg.cpus} CPUs\n",
        "| engine | rows | seconds | rows/s | vs local (same rows) | peak RSS MB | RSS vs smallest run | exit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = local.get(r["scale"])
        vs = f"{r['rows_per_s'] / base['rows_per_s']:.2f}x" if base else "-"
        grow = f"{r['peak_rss_mb'] / first[r['engine']]['peak_rss_mb']:.2f}x"
        lines.append(
            f"| {r['engine']} | {r['rows']} | {r['seconds']:.1f} | {r['rows_per_s']:.2f} | {vs} | "
            f"{r['peak_rss_mb']:.0f} | {grow} | {r['exit']} |"
        )
    diffs = [r for r in rows if "max_abs_diff" in r]
    for r in diffs:
        lines.append(
            f"\n{r['engine']} vs {cfg.engines[0]} at {r['rows']} rows: largest tensor difference "
            f"{r['max_abs_diff']:.2e}"
        )
    return "\n".join(lines)
