"""``soundvcm bench listen``: does a model follow its conditions, and what can a sync feature tell?

Two measurements of issue 23, each with its reference rows:

* **Condition sensitivity** (``--row NAME=MODEL``, Foley world test clips with their captions):
  the Pearson correlation of log-mel spectrograms between

  - outputs for *different clips with the same seed* (a model that ignores its conditions makes
    near copies: high), against the real soundtracks of different clips (reference: low);
  - outputs for *the same clip with different seeds* (how much the noise decides);
  - swaps: clip A's conditions with B's sync tokens, and with B's text: the correlation of that
    output with A's and with B's own outputs (which condition does the sound follow?).

* **Sync probe** (``--probe``): a small supervised reader that predicts "an impact in this latent
  frame" from each candidate sync feature, in the time order the network receives it, trained on
  Foley training clips and scored on test clips by onset F1 (±50 ms, pooled) after peak picking:
  the upper bound a feature allows. Reference rows: a perfect per-frame classifier and another
  clip's events (chance). It also reads the Big Buck Bunny test windows with the Foley-trained
  probe, scored against onsets detected in their real soundtracks (does the feature still place
  events on real video?).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from soundvcm.media.audio import load_audio
from soundvcm.media.mel import MelConfig, mel_spectrogram

SAMPLE_RATE = 22_050
SPECTRO = MelConfig(SAMPLE_RATE, 1024, 256, 1024, 64, 0.0, SAMPLE_RATE / 2, log="ln", clip_val=1e-5)


def spectro_corr(a: Tensor, b: Tensor) -> float:
    """Pearson correlation of two waveforms' log-mel spectrograms (64 bands, 11.6 ms hop)."""
    n = min(a.numel(), b.numel())
    x = mel_spectrogram(a.flatten()[:n].float()[None], SPECTRO).flatten()
    y = mel_spectrogram(b.flatten()[:n].float()[None], SPECTRO).flatten()
    x, y = x - x.mean(), y - y.mean()
    return float((x @ y) / (x.norm() * y.norm()).clamp_min(1e-12))


def mean_pairwise(waves: list[Tensor]) -> float:
    return float(np.mean([spectro_corr(waves[i], waves[j]) for i in range(len(waves)) for j in range(i)]))


# ----- condition sensitivity -----------------------------------------------------------------------
def foley_items(data: Path, split: str, limit: int, world: str = "foley") -> list[tuple[Path, str, list[float]]]:
    """(video, caption, event times) of the first ``limit`` clips of a Foley world split (``world``:
    the plain ``foley`` part or the ``directed`` one, whose pictures are filmed backdrops in motion)."""
    tsv = data / world / f"{split}.tsv"
    if not tsv.is_file():
        raise FileNotFoundError(f"{tsv} is missing: build the open data first with `soundvcm data open {data}`")
    out = []
    for line in tsv.read_text().splitlines()[1 : limit + 1]:
        rel, _, caption = line.partition("\t")
        video = tsv.parent / rel
        events = json.loads(video.with_suffix(".events.json").read_text())["events"]
        out.append((video, caption, [e["time"] for e in events]))
    return out


def sensitivity(pipe, items, seeds: tuple[int, int], duration: float, steps: int | None = None) -> dict[str, float]:
    """The correlations of the module docstring for one model."""
    encoded = [pipe.encode(video=v, prompt=caption, duration=duration) for v, caption, _ in items]

    def run(enc, seed: int) -> Tensor:
        return pipe.synthesize(enc, pipe.sampler(steps=steps), seed=seed).wave

    first = [run(e, seeds[0]) for e in encoded]
    second = [run(e, seeds[1]) for e in encoded]
    sync_to: tuple[list[float], list[float]] = ([], [])
    text_to: tuple[list[float], list[float]] = ([], [])
    for i, enc in enumerate(encoded):
        j = (i + 1) % len(encoded)
        for key, (to_a, to_b) in (("sync", sync_to), ("text", text_to)):
            swapped = type(enc)({**enc.conditions, key: encoded[j].conditions[key]}, enc.duration)
            out = run(swapped, seeds[0])
            to_a.append(spectro_corr(out, first[i]))
            to_b.append(spectro_corr(out, first[j]))
    return {
        "same seed, different clips": mean_pairwise(first),
        "same clip, different seeds": float(np.mean([spectro_corr(a, b) for a, b in zip(first, second)])),
        "sync from B: corr to A's output": float(np.mean(sync_to[0])),
        "sync from B: corr to B's output": float(np.mean(sync_to[1])),
        "text from B: corr to A's output": float(np.mean(text_to[0])),
        "text from B: corr to B's output": float(np.mean(text_to[1])),
    }


def real_soundtracks(items, duration: float) -> float:
    waves = [load_audio(v.with_suffix(".flac"), SAMPLE_RATE, duration=duration)[0] for v, _, _ in items]
    return mean_pairwise(waves)


# ----- the sync probe --------------------------------------------------------------------------------
def candidate_features(video: Path, duration: float, opencv: bool) -> dict[str, Tensor]:
    """Each candidate sync feature of one clip on the latent timeline (L, D), in time order."""
    from soundvcm.encoders import encoder_spec
    from soundvcm.encoders.base import take_frames
    from soundvcm.encoders.motion_flow import MotionFlowSync
    from soundvcm.encoders.motion_sync import MotionSync
    from soundvcm.media.video import load_video

    lite, lite2 = encoder_spec("lite"), encoder_spec("lite2")
    seq_old, seq = lite.sequence.with_duration(duration), lite2.sequence.with_duration(duration)
    clip = load_video(video, {"old": lite.sync_frames, "new": lite2.sync_frames}, duration=duration)
    old = MotionSync()(take_frames(clip.frames["old"], seq_old.sync_frames_needed)[None])[0]
    new = MotionFlowSync()(take_frames(clip.frames["new"], seq.sync_frames_needed)[None])[0]
    length = seq.latent_seq_len
    # lite's tokens as the network received them: spread evenly over the latent (nearest-exact)
    spread = F.interpolate(old.T[None], size=length, mode="nearest-exact")[0].T
    # lite's per-frame energies in time order: each latent frame takes the 25 fps frame at its centre
    frames = old.view(seq_old.num_sync_segments, 8, 2, 64)
    per_frame = torch.zeros(seq_old.sync_frames_needed, 64)
    for s in range(frames.shape[0]):
        per_frame[8 * s : 8 * s + 16] = frames[s].reshape(16, 64)
    centre = ((torch.arange(length) + 0.5) / seq.latent_rate * 25).round().long().clamp(max=per_frame.shape[0] - 1)
    feats = {
        "lite tokens, network order": spread,
        "lite energy, time order": per_frame[centre],
        "lite2 energy": new[:, 128:],
        "lite2 flow": new[:, :128],
        "lite2 flow + energy (lite2)": new,
    }
    if opencv:
        feats["opencv Farneback flow + energy"] = torch.cat([_farneback(clip.frames["new"], seq), new[:, 128:]], 1)
    return feats


def _farneback(frames: Tensor, seq) -> Tensor:
    import cv2

    from soundvcm.encoders.base import take_frames

    imgs = take_frames(frames, seq.sync_frames_needed)[:, 0].numpy()
    flows = [np.zeros((2, 8, 8), np.float32)]
    for a, b in zip(imgs[:-1], imgs[1:]):
        if np.array_equal(a, b):
            flows.append(np.zeros((2, 8, 8), np.float32))
            continue
        flow = torch.from_numpy(cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 9, 3, 5, 1.1, 0)).permute(2, 0, 1)
        flows.append(F.adaptive_avg_pool2d(flow[None], 8)[0].numpy())
    flow = torch.from_numpy(np.stack(flows)).view(seq.latent_seq_len, 2, -1).sum(1)
    return torch.sign(flow) * torch.log1p(flow.abs())


def frame_labels(events: list[float], length: int, rate: float) -> Tensor:
    y = torch.zeros(length)
    for t in events:
        if int(t * rate) < length:
            y[int(t * rate)] = 1
    return y


def _windows(x: Tensor, context: int = 3) -> Tensor:
    """(L, D) -> (L, (2 context + 1) D): each frame with its neighbours (edges repeated)."""
    pad = torch.cat([x[:1].expand(context, -1), x, x[-1:].expand(context, -1)])
    return torch.stack([pad[i : i + x.shape[0]] for i in range(2 * context + 1)], 1).flatten(1)


def peak_times(p: Tensor, threshold: float, rate: float) -> list[float]:
    """Frames that are local maxima (±1) above ``threshold``, at least 2 frames apart, as times."""
    out: list[int] = []
    for k in range(p.numel()):
        if p[k] >= threshold and p[k] == p[max(0, k - 1) : k + 2].max() and (not out or k - out[-1] > 1):
            out.append(k)
    return [(k + 0.5) / rate for k in out]


def pooled_f1(detected: list[list[float]], events: list[list[float]]) -> float:
    from soundvcm.evaluation.events import onset_f1

    tp = fp = fn = 0
    for d, e in zip(detected, events):
        s = onset_f1(d, e)
        tp, fp, fn = tp + len(s.matches), fp + len(d) - len(s.matches), fn + len(s.reference) - len(s.matches)
    return 2 * tp / max(1, 2 * tp + fp + fn)


class Probe(nn.Module):
    """A 2-layer MLP over 7 frames of features -> the logit of "an impact in the middle frame"."""

    def __init__(self, dim: int, hidden: int = 64):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(7 * dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 1)
        )
        self.mean: Tensor
        self.std: Tensor
        self.register_buffer("mean", torch.zeros(7 * dim))
        self.register_buffer("std", torch.ones(7 * dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp((_windows(x) - self.mean) / self.std)[:, 0]


def fit_probe(feats: list[Tensor], labels: list[Tensor], steps: int = 1500, seed: int = 0) -> Probe:
    torch.manual_seed(seed)
    probe = Probe(feats[0].shape[1])
    xs, ys = torch.cat([_windows(f) for f in feats]), torch.cat(labels)
    probe.mean.copy_(xs.mean(0))
    probe.std.copy_(xs.std(0) + 1e-6)
    opt = torch.optim.AdamW(probe.parameters(), 2e-3, weight_decay=1e-3)
    positive = ys.mean().clamp(1e-4, 1 - 1e-4)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=(1 - positive) / positive)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(xs), (1024,), generator=g)
        loss = loss_fn(probe.mlp((xs[idx] - probe.mean) / probe.std)[:, 0], ys[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return probe.eval()


def probe_scores(train: list[dict], test: list[dict], rate: float, bbb: list[dict] | None = None) -> dict[str, dict]:
    """Per candidate: test onset F1 (threshold chosen on the last sixth of the training clips) and,
    with ``bbb``, the F1 of the Foley-trained probe on Big Buck Bunny against onsets detected in
    its real soundtracks."""
    cut = len(train) * 5 // 6
    rows: dict[str, dict] = {}
    for name in train[0]["feats"]:
        probe = fit_probe([c["feats"][name] for c in train[:cut]], [c["labels"] for c in train[:cut]])
        with torch.no_grad():

            def prob(clip, probe=probe, name=name):
                return torch.sigmoid(probe(clip["feats"][name]))

            held = [prob(c) for c in train[cut:]]
            threshold = max(
                (pooled_f1([peak_times(p, th, rate) for p in held], [c["events"] for c in train[cut:]]), th)
                for th in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
            )[1]
            rows[name] = {
                "test F1": pooled_f1([peak_times(prob(c), threshold, rate) for c in test], [c["events"] for c in test]),
                "threshold": threshold,
            }
            if bbb and name in bbb[0]["feats"]:
                rows[name]["BBB F1 (detected onsets)"] = pooled_f1(
                    [peak_times(prob(c), threshold, rate) for c in bbb], [c["events"] for c in bbb]
                )
    events = [c["events"] for c in test]
    rows["perfect per-frame classifier"] = {
        "test F1": pooled_f1([peak_times(c["labels"], 0.5, rate) for c in test], events)
    }
    rows["another clip's events (chance)"] = {"test F1": pooled_f1(events[1:] + events[:1], events)}
    if bbb:
        onsets = [c["events"] for c in bbb]
        rows["another clip's events (chance)"]["BBB F1 (detected onsets)"] = pooled_f1(onsets[1:] + onsets[:1], onsets)
    return rows


@dataclass(frozen=True)
class ListenConfig:
    data: Path
    rows: tuple[tuple[str, str], ...] = ()  # (name, model)
    clips: int = 20
    seeds: tuple[int, int] = (0, 1)
    duration: float = 4.0
    probe: bool = False
    probe_train: int = 400
    probe_test: int = 150
    precision: str = "auto"
    probe_world: str = "foley"  # whose pictures the probe learns and is tested on (foley, directed)


def _probe_clips(cfg: ListenConfig, progress) -> dict[str, list[dict]]:
    import importlib.util

    opencv = importlib.util.find_spec("cv2") is not None
    rate = SAMPLE_RATE / 512
    length = math.ceil(cfg.duration * rate)
    clips: dict[str, list[dict]] = {}
    for split, n in (("train", cfg.probe_train), ("test", cfg.probe_test)):
        clips[split] = []
        for video, _, events in foley_items(cfg.data, split, n, cfg.probe_world):
            events = [t for t in events if t < cfg.duration]
            clips[split].append(
                {
                    "feats": candidate_features(video, cfg.duration, opencv),
                    "events": events,
                    "labels": frame_labels(events, length, rate),
                }
            )
            progress(1)
    clips["bbb"] = _bbb_clips(cfg, opencv, progress)
    return clips


def _bbb_clips(cfg: ListenConfig, opencv: bool, progress) -> list[dict]:
    from soundvcm.evaluation.events import detect_onsets

    tsv = cfg.data / "bbb" / "test.tsv"
    out = []
    for line in tsv.read_text().splitlines()[1:] if tsv.is_file() else []:
        video = tsv.parent / line.split("\t")[0]
        wave, _ = load_audio(video.with_suffix(".flac"), SAMPLE_RATE, duration=cfg.duration)
        out.append(
            {"feats": candidate_features(video, cfg.duration, opencv), "events": detect_onsets(wave, SAMPLE_RATE)}
        )
        progress(1)
    return out


def run_listen(cfg: ListenConfig, progress=lambda n: None) -> dict[str, Any]:
    from soundvcm.pipeline import Pipeline

    items = foley_items(cfg.data, "test", cfg.clips)
    doc: dict[str, Any] = {
        "clips": len(items),
        "seeds": list(cfg.seeds),
        "real soundtracks, different clips": real_soundtracks(items, cfg.duration),
        "rows": {},
    }
    for name, model in cfg.rows:
        pipe = Pipeline.load(model, device="cpu", precision=cfg.precision)
        doc["rows"][name] = {"model": model, **sensitivity(pipe, items, cfg.seeds, cfg.duration)}
        progress(1)
    if cfg.probe:
        clips = _probe_clips(cfg, progress)
        doc["probe"] = probe_scores(clips["train"], clips["test"], SAMPLE_RATE / 512, clips["bbb"])
        doc["probe_clips"] = {k: len(v) for k, v in clips.items()}
        doc["probe_world"] = cfg.probe_world
    return doc


def table(doc: dict[str, Any]) -> str:
    lines = [f"### Condition sensitivity ({doc['clips']} Foley test clips, seeds {doc['seeds']})", ""]
    keys = [
        "same seed, different clips",
        "same clip, different seeds",
        "sync from B: corr to A's output",
        "sync from B: corr to B's output",
        "text from B: corr to A's output",
        "text from B: corr to B's output",
    ]
    lines += ["| row | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, r in doc["rows"].items():
        lines.append(f"| {name} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + " |")
    lines.append(f"| real soundtracks | {doc['real soundtracks, different clips']:.3f} |" + " - |" * (len(keys) - 1))
    if "probe" in doc:
        lines += [
            "",
            f"### Sync probe (clips: {doc['probe_clips']})",
            "",
            f"| feature | {doc.get('probe_world', 'foley')} test F1 | BBB F1 (detected onsets) |",
            "|---|---|---|",
        ]
        for name, r in doc["probe"].items():
            bbb = r.get("BBB F1 (detected onsets)")
            lines.append(f"| {name} | {r['test F1']:.3f} | {'-' if bbb is None else f'{bbb:.3f}'} |")
    return "\n".join(lines)
