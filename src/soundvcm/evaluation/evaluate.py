"""``soundvcm evaluate``: generated audio against ground truth, av-benchmark style, offline here.

Files are paired by stem, as av-benchmark does (a ``NAME-K`` prediction also pairs with ``NAME``:
several samples per ground-truth clip). Audio is mixed to mono, resampled for the embedder,
DC-removed and truncated to ``audio_length`` seconds. Nothing is dropped silently: unpaired
files, short or unreadable clips and sample-rate mismatches go into the report (and stderr).

Metrics whose models are available are computed and written with av-benchmark's key names; our
offline ones are ``FD-AISFX`` (Fréchet distance of aisfx block embeddings), ``KL-AISFX``
(KL(gt || pred) on the soundstorm head, paired), ``ISC-AISFX`` (inception score, mean and std)
and ``Onset-Lag-ms`` (mean |lag| of onset envelopes, paired). The paper's embedders (PANNs,
VGGish, PaSST, ImageBind, Synchformer) are not implemented yet; their keys are listed under
``not_computed`` with the reason. Ground-truth embeddings are cached next to the GT audio
(``GT/.soundvcm_eval/aisfx.safetensors``, keyed by name, size and mtime) and that file can be
passed as ``--gt`` on its own.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from soundvcm.atomic import atomic_write
from soundvcm.evaluation import aisfx
from soundvcm.evaluation.metrics import (
    MetricError,
    frechet_distance_embeddings,
    inception_score,
    kl_softmax,
    mean_abs_onset_lag_ms,
)
from soundvcm.media.audio import load_audio
from soundvcm.media.errors import MediaError

AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".m4a", ".aac", ".opus"}
PAPER_KEYS = (
    "FD-VGG",
    "FD-PANN",
    "FD-PASST",
    "KL-PANNS-softmax",
    "KL-PASST-softmax",
    "ISC-PANNS-mean",
    "IB-Score",
    "DeSync",
)
ONSET_SR = 16_000
SUFFIX = re.compile(r"-\d+$")


def audio_files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder of audio files")
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()}


def pair(pred: dict[str, Path], gt_names: set[str]) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """(pred stem, gt stem) pairs, unpaired predictions, ground truth without predictions."""
    pairs, unpaired = [], []
    for stem in pred:
        target = stem if stem in gt_names else SUFFIX.sub("", stem)
        (pairs.append((stem, target)) if target in gt_names else unpaired.append(stem))
    used = {g for _, g in pairs}
    return pairs, unpaired, sorted(gt_names - used)


def load_clip(path: Path, sample_rate: int, length: float) -> tuple[torch.Tensor, int, bool]:
    """(mono DC-removed wave at sample_rate, native rate, shorter than ``length``)."""
    native = load_audio(path)[1]
    wave, _ = load_audio(path, sample_rate, duration=length)
    short = wave.numel() < int(length * sample_rate * 0.99)
    return wave - wave.mean(), native, short


class EmbeddingCache:
    """aisfx embeddings + logits per file, in one safetensors file, valid while size and mtime hold."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, dict[str, torch.Tensor]] = {}
        self.keys: dict[str, list] = {}
        if path.is_file():
            with safe_open(str(path), "pt") as f:
                self.keys = json.loads(f.metadata()["files"])
                for name in self.keys:
                    self.entries[name] = {"emb": f.get_tensor(f"{name}/emb"), "logits": f.get_tensor(f"{name}/logits")}

    def get(self, name: str, stamp: list | None) -> dict[str, torch.Tensor] | None:
        if name in self.entries and (stamp is None or self.keys.get(name) == stamp):
            return self.entries[name]
        return None

    def put(self, name: str, stamp: list, emb: torch.Tensor, logits: torch.Tensor) -> None:
        self.entries[name] = {"emb": emb.contiguous(), "logits": logits.contiguous()}
        self.keys[name] = stamp

    def save(self) -> None:
        tensors = {f"{n}/{k}": v for n, e in self.entries.items() for k, v in e.items()}
        meta = {"files": json.dumps(self.keys), "embedder": "aisfx-0.1.2"}
        atomic_write(self.path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def _stamp(path: Path) -> list:
    st = path.stat()
    return [st.st_size, int(st.st_mtime_ns)]


def evaluate(
    pred_dir: Path,
    gt: Path,
    audio_length: float = 8.0,
    video_dir: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    pred_files = audio_files(Path(pred_dir))
    if not pred_files:
        raise FileNotFoundError(f"{pred_dir}: no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})")
    gt = Path(gt)
    if gt.is_file() and gt.suffix == ".safetensors":
        gt_files, cache = {}, EmbeddingCache(gt)
        gt_names = set(cache.entries)
    else:
        gt_files = audio_files(gt)
        cache = EmbeddingCache(gt / ".soundvcm_eval" / "aisfx.safetensors")
        gt_names = set(gt_files)
    if not gt_names:
        raise FileNotFoundError(f"{gt}: no ground-truth audio or embeddings")
    pairs, unpaired_pred, unpaired_gt = pair(pred_files, gt_names)
    report: dict[str, Any] = {
        "pairs": len(pairs),
        "unpaired_pred": unpaired_pred,
        "unpaired_gt": unpaired_gt,
        "short": [],
        "unreadable": [],
        "sample_rate_mismatch": [],
    }
    net = aisfx.load_aisfx()
    bar = tqdm(
        total=len(pred_files) + len(gt_files), desc="evaluate", unit="clip", disable=not progress, file=sys.stderr
    )
    gt_emb, gt_logits, gt_waves, gt_rates = {}, {}, {}, {}
    for name in sorted(gt_names):
        path = gt_files.get(name)
        cached = cache.get(name, _stamp(path) if path else None)
        if path is not None:
            try:
                wave, native, short = load_clip(path, aisfx.SAMPLE_RATE, audio_length)
            except MediaError as exc:
                report["unreadable"].append(f"gt/{name}: {exc}")
                bar.update(1)
                continue
            gt_waves[name], gt_rates[name] = wave, native
            if short:
                report["short"].append(f"gt/{name}")
            if cached is None:
                emb, logits = aisfx.embed_clip(net, wave)
                cache.put(name, _stamp(path), emb, logits)
                cached = cache.get(name, None)
            bar.update(1)
        gt_emb[name], gt_logits[name] = cached["emb"], cached["logits"]
    if gt_files:
        cache.save()
    pred_emb, pred_logits, pred_waves = {}, {}, {}
    for name, path in pred_files.items():
        try:
            wave, native, short = load_clip(path, aisfx.SAMPLE_RATE, audio_length)
        except MediaError as exc:
            report["unreadable"].append(f"pred/{name}: {exc}")
            bar.update(1)
            continue
        if short:
            report["short"].append(f"pred/{name}")
        pred_waves[name] = wave
        pred_emb[name], pred_logits[name] = aisfx.embed_clip(net, wave)
        bar.update(1)
    bar.close()
    for p, g in pairs:
        if p in pred_files and g in gt_rates and load_audio(pred_files[p])[1] != gt_rates[g]:
            report["sample_rate_mismatch"].append(f"{p}: pred {load_audio(pred_files[p])[1]} Hz vs gt {gt_rates[g]} Hz")
    metrics: dict[str, float] = {}
    valid_pairs = [(p, g) for p, g in pairs if p in pred_emb and g in gt_emb]
    try:
        metrics["FD-AISFX"] = frechet_distance_embeddings(
            torch.cat(list(pred_emb.values())), torch.cat(list(gt_emb.values()))
        )
    except MetricError as exc:
        report["FD-AISFX"] = f"not computed: {exc}"
    if valid_pairs:
        metrics["KL-AISFX"] = kl_softmax(
            torch.stack([pred_logits[p] for p, _ in valid_pairs]), torch.stack([gt_logits[g] for _, g in valid_pairs])
        )
    if pred_logits:
        mean, std = inception_score(torch.stack(list(pred_logits.values())), splits=min(10, len(pred_logits)))
        metrics["ISC-AISFX"], metrics["ISC-AISFX-std"] = mean, std
    onset_pairs = []
    for p, g in valid_pairs:
        if g in gt_waves:
            from soundvcm.media.audio import resample

            onset_pairs.append(
                (
                    resample(pred_waves[p], aisfx.SAMPLE_RATE, ONSET_SR),
                    resample(gt_waves[g], aisfx.SAMPLE_RATE, ONSET_SR),
                )
            )
    if onset_pairs:
        metrics["Onset-Lag-ms"] = mean_abs_onset_lag_ms(onset_pairs, ONSET_SR)
    else:
        report["Onset-Lag-ms"] = "not computed: needs ground-truth audio (an embedding cache has none)"
    report["not_computed"] = {k: "embedder not implemented in this version (see issue 6)" for k in PAPER_KEYS}
    if video_dir is not None:
        report["video"] = "IB-Score and DeSync need ImageBind and Synchformer, not implemented yet"
    for key in ("unpaired_pred", "unpaired_gt", "short", "unreadable", "sample_rate_mismatch"):
        if report[key]:
            print(f"soundvcm: evaluate: {key.replace('_', ' ')}: {', '.join(report[key][:10])}"
                  f"{' ...' if len(report[key]) > 10 else ''}", file=sys.stderr)  # fmt: skip
    return {**metrics, "report": report}
