"""``soundvcm evaluate``: generated audio against ground truth, av-benchmark style, offline here.

Files are paired by stem, as av-benchmark does (``NAME-K`` and ``000000014_NAME-K`` predictions
also pair with ``NAME``: several samples per ground-truth clip, VGGSound's ordered names). Audio
is mixed to mono, resampled for the embedder,
DC-removed and truncated to ``audio_length`` seconds. Nothing is dropped silently: unpaired
files, short or unreadable clips and sample-rate mismatches go into the report (and stderr).

Metrics whose models are available are computed and written with av-benchmark's key names; our
offline ones are ``FD-AISFX`` (Fréchet distance of aisfx block embeddings), ``KID-AISFX`` (the
unbiased polynomial-kernel MMD^2 of the same embeddings, defined for small sets), ``KL-AISFX``
(KL(gt || pred) on the soundstorm head, paired), ``ISC-AISFX`` (inception score, mean and std)
and ``Onset-Lag-ms`` (mean |lag| of onset envelopes, paired). With their weight files present
(``soundvcm weights download panns_cnn14_16k vggish``) FD-PANN, KL-PANNS-softmax, ISC-PANNS-mean
FD-VGG, FD-PASST, KL-PASST-softmax and ISC-PASST-mean are added; with ``--video`` and the
Synchformer file, DeSync (first and last 4.8 s of each prediction against its video). ImageBind
(IB-Score) joins when its file is present and ``--video`` is given. Every key not
computed is listed under ``not_computed`` with the reason. Ground-truth embeddings are cached next
to the GT audio
(``GT/.soundvcm_eval/features.safetensors``, keyed by name, size and mtime) and that file can be
passed as ``--gt`` on its own.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from tqdm import tqdm

from soundvcm.atomic import atomic_write, save_tensors
from soundvcm.evaluation import aisfx
from soundvcm.evaluation.metrics import (
    MetricError,
    frechet_distance_embeddings,
    inception_score,
    kernel_inception_distance,
    kl_softmax,
    mean_abs_onset_lag_ms,
)
from soundvcm.evaluation.video_metrics import desync, ib_score
from soundvcm.media.audio import load_audio, resample
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
PREFIX = re.compile(r"^\d{9}_")


def audio_files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder of audio files")
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()}


def pair(pred: dict[str, Path], gt_names: set[str]) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """(pred stem, gt stem) pairs, unpaired predictions, ground truth without predictions."""
    pairs, unpaired = [], []
    for stem in pred:
        # av-benchmark's clean_sample_name: "NAME-K" (sample K of NAME) and "000000014_NAME-K" (VGGSound order)
        candidates = (stem, SUFFIX.sub("", stem), PREFIX.sub("", SUFFIX.sub("", stem)))
        target = next((c for c in candidates if c in gt_names), None)
        (pairs.append((stem, target)) if target is not None else unpaired.append(stem))
    used = {g for _, g in pairs}
    return pairs, unpaired, sorted(gt_names - used)


class EmbeddingCache:
    """Per-file features (any named tensors) in one safetensors file, valid while size and mtime hold."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, dict[str, torch.Tensor]] = {}
        self.keys: dict[str, list] = {}
        if path.is_file():
            with safe_open(str(path), "pt") as f:
                self.keys = json.loads(f.metadata()["files"])
                for key in f.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                    name, _, field = key.rpartition("/")
                    self.entries.setdefault(name, {})[field] = f.get_tensor(key)

    def get(self, name: str, stamp: list | None, fields: tuple[str, ...]) -> dict[str, torch.Tensor] | None:
        entry = self.entries.get(name)
        if entry is None or (stamp is not None and self.keys.get(name) != stamp) or not set(fields) <= set(entry):
            return None
        return entry

    def put(self, name: str, stamp: list, features: dict[str, torch.Tensor]) -> None:
        self.entries[name] = {k: v.contiguous() for k, v in features.items()}
        self.keys[name] = stamp

    def save(self) -> None:
        tensors = {f"{n}/{k}": v for n, e in self.entries.items() for k, v in e.items()}
        atomic_write(self.path, lambda tmp: save_tensors(tmp, tensors, metadata={"files": json.dumps(self.keys)}))


def _stamp(path: Path) -> list:
    st = path.stat()
    return [st.st_size, int(st.st_mtime_ns)]


def extractors() -> tuple[dict[str, tuple[int, Any]], dict[str, str]]:
    """Available embedders: name -> (sample rate, clip -> features); and why others are missing."""
    from soundvcm.weights import WeightsError, resolve

    net = aisfx.load_aisfx()
    available: dict[str, tuple[int, Any]] = {
        "aisfx": (aisfx.SAMPLE_RATE, lambda w: dict(zip(("emb", "logits"), aisfx.embed_clip(net, w))))
    }
    missing: dict[str, str] = {}
    try:
        from soundvcm.evaluation.panns import PANNS_WEIGHTS, load_panns
        from soundvcm.evaluation.panns import SAMPLE_RATE as PANNS_SR

        panns = load_panns(resolve(PANNS_WEIGHTS))

        def run_panns(w: torch.Tensor) -> dict[str, torch.Tensor]:
            with torch.inference_mode():
                emb, logits = panns(w[None])
            return {"emb": emb[0], "logits": logits[0]}

        available["panns"] = (PANNS_SR, run_panns)
    except WeightsError as exc:
        for key in ("FD-PANN", "KL-PANNS-softmax", "ISC-PANNS-mean"):
            missing[key] = str(exc)
    try:
        from soundvcm.evaluation.vggish import SAMPLE_RATE as VGG_SR
        from soundvcm.evaluation.vggish import VGGISH_WEIGHTS, load_vggish

        vgg = load_vggish(resolve(VGGISH_WEIGHTS))

        def run_vggish(w: torch.Tensor) -> dict[str, torch.Tensor]:
            with torch.inference_mode():
                return {"emb": vgg.embed(w)}

        available["vggish"] = (VGG_SR, run_vggish)
    except WeightsError as exc:
        missing["FD-VGG"] = str(exc)
    try:
        from soundvcm.evaluation import passt

        passt_net = load_passt_file(resolve(passt.PASST_WEIGHTS))
        available["passt"] = (passt.SAMPLE_RATE, lambda w: dict(zip(("emb", "logits"), passt.embed_clip(passt_net, w))))
    except WeightsError as exc:
        for key in ("FD-PASST", "KL-PASST-softmax", "ISC-PASST-mean"):
            missing[key] = str(exc)
    return available, missing


def load_passt_file(path):
    from soundvcm.evaluation.passt import load_passt

    return load_passt(path)


def _features(models: dict, wave: torch.Tensor, native: int) -> dict[str, torch.Tensor]:
    out = {}
    for name, (sr, fn) in models.items():
        for kind, value in fn(resample(wave, native, sr) if sr != native else wave).items():
            out[f"{name}.{kind}"] = value.float().cpu()
    return out


def _sources(pred_dir: Path, gt: Path, only) -> tuple[dict, dict, EmbeddingCache, set[str]]:
    """(pred files, gt files, gt embedding cache, gt names), restricted to the stems in ``only``."""
    pred_files = audio_files(Path(pred_dir))
    if only is not None:
        pred_files = {k: v for k, v in pred_files.items() if k in only}
    if not pred_files:
        raise FileNotFoundError(f"{pred_dir}: no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})")
    gt = Path(gt)
    if gt.is_file() and gt.suffix == ".safetensors":
        gt_files, cache = {}, EmbeddingCache(gt)
        gt_names = set(cache.entries)
    else:
        gt_files = audio_files(gt)
        cache = EmbeddingCache(gt / ".soundvcm_eval" / "features.safetensors")
        gt_names = set(gt_files)
    if only is not None:
        gt_files = {k: v for k, v in gt_files.items() if k in only}
        gt_names = {n for n in gt_names if n in only}
    if not gt_names:
        raise FileNotFoundError(f"{gt}: no ground-truth audio or embeddings")
    return pred_files, gt_files, cache, gt_names


@dataclass
class _Embedded:
    feats: dict[str, dict[str, dict[str, torch.Tensor]]] = field(default_factory=lambda: {"gt": {}, "pred": {}})
    waves: dict[str, dict[str, torch.Tensor]] = field(default_factory=lambda: {"gt": {}, "pred": {}})
    rates: dict[str, dict[str, int]] = field(default_factory=lambda: {"gt": {}, "pred": {}})


def _embed_side(out: _Embedded, side, names, files, cache, models, fields, audio_length, report, bar) -> None:
    """Decode each clip once: its embeddings (cached for ground truth) and its wave at the onset rate."""
    for name in names:
        path = files.get(name)
        if path is None:  # ground truth from an embedding cache only
            cached = cache.get(name, None, ())
            out.feats[side][name] = {k: v for k, v in cached.items() if k in fields}
            continue
        cached = cache.get(name, _stamp(path), fields) if side == "gt" else None
        try:
            full, native = load_audio(path, duration=audio_length)  # decoded once, resampled below
            wave = (resample(full, native, ONSET_SR) if native != ONSET_SR else full).clamp(-1, 1)
        except MediaError as exc:
            report["unreadable"].append(f"{side}/{name}: {exc}")
            bar.update(1)
            continue
        out.rates[side][name] = native
        if wave.numel() < int(audio_length * ONSET_SR * 0.99):
            report["short"].append(f"{side}/{name}")
        out.waves[side][name] = wave - wave.mean()
        if cached is None:
            cached = _features(models, full - full.mean(), native)
            if side == "gt":
                cache.put(name, _stamp(path), cached)
        out.feats[side][name] = cached
        bar.update(1)


def _distribution_metrics(feats, valid, models, report) -> dict[str, float]:
    """FD, KID, KL and IS per embedder (av-benchmark's definitions)."""
    metrics: dict[str, float] = {}

    def stacked(side: str, key: str, names=None, cat: bool = False) -> torch.Tensor:
        items = [feats[side][n][key] for n in (names if names is not None else feats[side]) if key in feats[side][n]]
        return torch.cat(items) if cat else torch.stack(items)

    def guarded(name: str, metric, key: str, cat: bool) -> None:
        try:
            metrics[name] = metric(stacked("pred", key, cat=cat), stacked("gt", key, cat=cat))
        except (MetricError, RuntimeError) as exc:
            report[name] = f"not computed: {exc}"

    for model, prefix in (("aisfx", "AISFX"), ("panns", "PANN"), ("passt", "PASST")):
        if model not in models:
            continue
        guarded(f"FD-{prefix}", frechet_distance_embeddings, f"{model}.emb", cat=model == "aisfx")
        if model == "aisfx":
            guarded("KID-AISFX", kernel_inception_distance, "aisfx.emb", cat=True)
        kl_key = {"aisfx": "KL-AISFX", "panns": "KL-PANNS-softmax", "passt": "KL-PASST-softmax"}[model]
        if valid:
            metrics[kl_key] = kl_softmax(
                stacked("pred", f"{model}.logits", [p for p, _ in valid]),
                stacked("gt", f"{model}.logits", [g for _, g in valid]),
            )
        logits = stacked("pred", f"{model}.logits")
        mean, std = inception_score(logits, splits=min(10, len(logits)))
        isc = {"aisfx": "ISC-AISFX", "panns": "ISC-PANNS-mean", "passt": "ISC-PASST-mean"}[model]
        metrics[isc], metrics[isc.replace("-mean", "") + "-std"] = mean, std
    if "vggish" in models:
        guarded("FD-VGG", frechet_distance_embeddings, "vggish.emb", cat=True)
    return metrics


def _video_metrics(valid, waves, video_dir, audio_length, report, missing) -> dict[str, float]:
    if video_dir is None:
        missing["DeSync"] = "needs --video (the videos the predictions were generated for)"
        missing["IB-Score"] = "needs --video (the videos the predictions were generated for)"
        return {}
    metrics = {}
    score = desync(valid, waves, video_dir, audio_length, report)
    if score is not None:
        metrics["DeSync"] = score
    ib = ib_score(valid, waves, video_dir, audio_length, report)
    if ib is not None:
        metrics["IB-Score"] = ib
    return metrics


def evaluate(
    pred_dir: Path,
    gt: Path,
    audio_length: float = 8.0,
    video_dir: Path | None = None,
    progress: bool = True,
    only: Collection[str] | None = None,
) -> dict[str, Any]:
    """Score the audio in ``pred_dir`` against ``gt`` (a folder or an embedding cache); ``only``:
    the stems to score, when the folders hold more than one run's files."""
    pred_files, gt_files, cache, gt_names = _sources(pred_dir, gt, None if only is None else set(only))
    pairs, unpaired_pred, unpaired_gt = pair(pred_files, gt_names)
    report: dict[str, Any] = {
        "pairs": len(pairs),
        "unpaired_pred": unpaired_pred,
        "unpaired_gt": unpaired_gt,
        "short": [],
        "unreadable": [],
        "sample_rate_mismatch": [],
    }
    models, missing = extractors()
    fields = tuple(f"{m}.{f}" for m in models for f in (("emb", "logits") if m != "vggish" else ("emb",)))
    bar = tqdm(
        total=len(pred_files) + len(gt_files), desc="evaluate", unit="clip", disable=not progress, file=sys.stderr
    )
    emb = _Embedded()
    for side, names, files in (("gt", sorted(gt_names), gt_files), ("pred", sorted(pred_files), pred_files)):
        _embed_side(emb, side, names, files, cache, models, fields, audio_length, report, bar)
    bar.close()
    if gt_files:
        cache.save()
    for p, g in pairs:
        if p in emb.rates["pred"] and g in emb.rates["gt"] and emb.rates["pred"][p] != emb.rates["gt"][g]:
            report["sample_rate_mismatch"].append(f"{p}: pred {emb.rates['pred'][p]} Hz vs gt {emb.rates['gt'][g]} Hz")
    valid = [(p, g) for p, g in pairs if p in emb.feats["pred"] and g in emb.feats["gt"]]
    metrics = _distribution_metrics(emb.feats, valid, models, report)
    waves = emb.waves
    onset_pairs = [(waves["pred"][p], waves["gt"][g]) for p, g in valid if p in waves["pred"] and g in waves["gt"]]
    if onset_pairs:
        metrics["Onset-Lag-ms"] = mean_abs_onset_lag_ms(onset_pairs, ONSET_SR)
    else:
        report["Onset-Lag-ms"] = "not computed: needs ground-truth audio (an embedding cache has none)"
    report["not_computed"] = missing
    metrics.update(_video_metrics(valid, waves["pred"], video_dir, audio_length, report, missing))
    for key in ("unpaired_pred", "unpaired_gt", "short", "unreadable", "sample_rate_mismatch"):
        if report[key]:
            print(
                f"soundvcm: evaluate: {key.replace('_', ' ')}: {', '.join(report[key][:10])}"
                f"{' ...' if len(report[key]) > 10 else ''}",
                file=sys.stderr,
            )
    return {**metrics, "report": report}
