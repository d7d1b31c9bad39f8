"""Put generated audio into the original video (mp4: video + AAC audio), atomically and in sync.

Time 0 of the generated audio is the video's first *displayed* frame (what the encoders saw,
:func:`soundvcm.media.video.load_video`), so the muxed picture must start there too:

* **Copy** (the video stream's codec fits MP4: H.264, HEVC, MPEG-4, AV1, and the clip starts at
  0 s): packets are copied from the first one in decode order, and every timestamp is shifted by
  the first displayed frame's pts, not by the first packet's dts. With B-frames the first dts is
  negative; packets before an edit list's start (FFmpeg flags them *discard*: they are decoded
  but never shown) keep negative timestamps, and the MP4 muxer writes an edit list that hides
  them. Packets after the end are dropped unless a frame shown before the end is decoded from
  them. The result is then *checked*: its first displayed video frame and its audio must both
  start at 0. When that cannot be proven the clip is re-encoded instead.
* **Re-encode** (any other codec, any clip starting later than 0 s, a source with corrupt packets,
  which a copy would carry into the output, or a failed check): frames
  are decoded and written to H.264 with their own presentation times, relative to ``start``; the
  frame on screen at ``start`` is shown from 0. Variable frame rates stay variable.

The video is cut to the audio's length: the last picture shown stays on screen up to the audio's
end and no further, also when a variable frame rate leaves seconds between two frames. Rotation
metadata is kept. AAC coding can overshoot the
input's peak (by ~20 % on the near-square waves a saturated vocoder makes); the written track is
decoded once and, while it peaks above -0.5 dBFS, encoded again with a gain below 1 (an error
after six tries), so the mp4's sound never exceeds full scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter
from torch import Tensor

from soundvcm.atomic import atomic_write
from soundvcm.media.audio import resample
from soundvcm.media.errors import MediaError, check_input_path
from soundvcm.media.video import decode_frames, open_media, probe

COPYABLE = {"h264", "hevc", "mpeg4", "av1"}
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)
AAC_CEILING = 10 ** (-0.5 / 20)  # the decoded AAC track stays below -0.5 dBFS
AAC_TRIES = 6  # encodings before giving up (never a written track above the ceiling)
REENCODE_TIME_BASE = Fraction(1, 90_000)  # MPEG's clock: fine enough for any frame rate, VFR included


def encode_aac(container, wave: np.ndarray, sample_rate: int) -> None:
    """Add a mono AAC stream to an output container and mux all of ``wave`` (float32, [-1, 1]) into it.

    Add every other stream first: the container's header is written at the first packet."""
    stream = container.add_stream("aac", rate=sample_rate)
    stream.layout = "mono"
    stream.bit_rate = 128_000
    frame_size = stream.codec_context.frame_size or 1024
    pts = 0
    for i in range(0, len(wave), frame_size):
        chunk = np.ascontiguousarray(wave[None, i : i + frame_size], dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
        frame.sample_rate = sample_rate
        frame.pts = pts
        pts += chunk.shape[1]
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


@dataclass(frozen=True)
class CopyPlan:
    """What a stream copy of [0, duration) keeps: packets ``[0, last]`` in decode order, shifted by
    ``shift`` ticks (the first displayed frame's pts) so that frame lands on 0."""

    shift: int
    last: int
    frame_ticks: float  # one frame period in stream ticks, for the check
    last_shown: int = 0  # pts (before the shift) of the last frame shown before the end
    end: int = 0  # the audio's end in stream ticks, after the shift


def write_mp4(path: Path, frames: np.ndarray, fps: float, audio: np.ndarray, sample_rate: int, crf: int = 20) -> Path:
    """Write uint8 RGB ``frames`` (T, H, W, 3) at ``fps`` as H.264 (no B-frames) plus ``audio`` as
    mono AAC, atomically; frame i is shown at i / fps, audio sample 0 at time 0."""
    rate = Fraction(fps).limit_denominator(1001)

    def write(tmp: Path) -> None:
        with av.open(str(tmp), mode="w", format="mp4") as c:
            vs = c.add_stream("libx264", rate=rate)
            vs.height, vs.width = frames.shape[1:3]
            vs.pix_fmt = "yuv420p"
            vs.options = {"crf": str(crf), "preset": "veryfast", "bf": "0"}
            encode_aac(c, audio, sample_rate)
            for i, img in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
                frame.pts, frame.time_base = i, 1 / rate
                for packet in vs.encode(frame):
                    c.mux(packet)
            for packet in vs.encode(None):
                c.mux(packet)

    return atomic_write(path, write)


def plan_copy(video: Path, duration: float) -> CopyPlan | None:
    """Demux once (no decoding) to find the first displayed frame and the last packet needed."""
    with open_media(video) as source:
        vin = source.streams.video[0]
        tb = vin.time_base
        shown: list[tuple[int, int]] = []  # (decode index, pts) of displayed packets
        for index, packet in enumerate(source.demux(vin)):
            if packet.pts is None or packet.dts is None:
                if packet.size:  # a packet without timestamps: alignment cannot be proven
                    return None
                continue
            if not packet.is_discard:
                shown.append((index, packet.pts))
        rate = vin.guessed_rate or vin.average_rate or Fraction(25)
    if not shown or tb is None:
        return None
    first = min(pts for _, pts in shown)
    end = first + duration / float(tb)
    needed = [(index, pts) for index, pts in shown if pts < end - 1e-6]
    if not needed:
        return None
    last = max(i for i, _ in needed)
    if any(pts >= end - 1e-6 for index, pts in shown if index <= last):
        # a reference frame shown after the end is decoded before a frame shown within it (B-frames
        # around a long gap, or any cut mid-GOP): copied, it would put pictures past the sound
        return None
    return CopyPlan(
        shift=first,
        last=last,
        frame_ticks=float(1 / (float(rate) * tb)),
        last_shown=max(p for _, p in needed),
        end=int(round(duration / float(tb))),
    )


def _write_copy(source, target, vin, plan: CopyPlan, rotation: int, audio: np.ndarray, sample_rate: int) -> None:
    vout = target.add_stream_from_template(vin)
    if rotation:
        vout.set_display_rotation(rotation)
    encode_aac(target, audio, sample_rate)
    for index, packet in enumerate(source.demux(vin)):
        if index > plan.last:
            break
        if packet.pts is None or packet.dts is None:
            continue
        if packet.pts == plan.last_shown:  # the last picture stays up to the audio's end, not beyond (VFR)
            packet.duration = max(1, plan.end - (packet.pts - plan.shift))
        packet.pts -= plan.shift
        packet.dts -= plan.shift
        packet.stream = vout
        target.mux(packet)


def copy_is_aligned(path: Path, frame_ticks: float, duration: float) -> bool:
    """True when ``path`` shows its first video frame and starts its audio at 0 (half a frame) and
    shows no picture at or after ``duration`` seconds (the audio's end)."""
    with open_media(path) as c:
        v = c.streams.video[0]
        shown = [p.pts for p in c.demux(v) if p.pts is not None and not p.is_discard]
        if not shown or v.time_base is None:
            return False
        video_start = min(shown) * float(v.time_base)
        video_last = max(shown) * float(v.time_base)
        a = c.streams.audio[0]
        audio_start = float(a.start_time * a.time_base) if a.start_time is not None else 0.0
        half_frame = 0.5 * frame_ticks * float(v.time_base)  # PyAV >= 18: streams close with their container
    return abs(video_start) <= half_frame and abs(audio_start) <= half_frame and video_last < duration


def aac_peak(path: Path) -> float:
    """The largest decoded sample of ``path``'s audio track."""
    with open_media(path) as c:
        return max((float(np.abs(f.to_ndarray()).max()) for f in c.decode(c.streams.audio[0])), default=0.0)


def _write_reencoded(
    source, target, vin, t0: float, start: float, duration: float, rotation: int, audio: np.ndarray, sample_rate: int
) -> None:
    """Frames from ``t0 + start`` (``t0``: the first displayed frame's time, the clip's 0) re-encoded
    with their own times on the output's clock."""
    rate = vin.guessed_rate or vin.average_rate or Fraction(25)
    vout = target.add_stream("libx264", rate=rate)
    w, h = vin.codec_context.width, vin.codec_context.height
    vout.width, vout.height = w - w % 2, h - h % 2
    vout.pix_fmt = "yuv420p"
    vout.time_base = REENCODE_TIME_BASE
    vout.codec_context.time_base = REENCODE_TIME_BASE
    vout.options = {"crf": "18", "preset": "veryfast"}
    if rotation:
        vout.set_display_rotation(rotation)
    encode_aac(target, audio, sample_rate)
    if start > 0:
        source.seek(int((t0 + start) * av.time_base), any_frame=False, backward=True)
    last_pts = -1
    held = None  # the latest frame at or before `start`: on screen at time 0
    scaler = VideoReformatter()  # one swscale context for the whole stream (a new one per frame costs ~0.7 ms)

    def emit(frame, rel: float) -> None:
        nonlocal last_pts
        pts = max(int(round(rel / REENCODE_TIME_BASE)), last_pts + 1)
        img = scaler.reformat(frame, width=vout.width, height=vout.height, format="yuv420p")
        img.pts, img.time_base = pts, REENCODE_TIME_BASE
        last_pts = pts
        for packet in vout.encode(img):
            target.mux(packet)

    for frame in decode_frames(source, vin):  # corrupt packets skipped: the output decodes all through
        if frame.time is None:
            continue
        rel = frame.time - t0 - start  # this frame's time on the output's clock
        if rel <= 1e-6:
            held = frame
            continue
        if held is not None:
            emit(held, 0.0)
            held = None
        if rel >= duration - 1e-6:
            break
        emit(frame, rel)
    if held is not None:
        emit(held, 0.0)
    end = int(round(duration / REENCODE_TIME_BASE))
    for packet in vout.encode(None):
        if packet.pts == last_pts:  # the last picture stays up to the audio's end, not beyond or short of it
            packet.duration = max(1, end - last_pts)
        target.mux(packet)


def mux_audio(
    video: str | Path,
    wave: Tensor | np.ndarray,
    sample_rate: int,
    out: str | Path,
    start: float = 0.0,
    reencode: bool | None = None,
) -> Path:
    """Write ``out`` (.mp4): the video from ``start`` for len(wave)/sample_rate seconds + the audio.

    ``reencode=None`` copies the video stream when that keeps it in sync (see the module
    docstring) and re-encodes otherwise; True/False force one way (False still re-encodes when
    the copy's alignment cannot be proven).
    """
    video = check_input_path(video)
    out = Path(out).with_suffix(".mp4")
    audio = torch.as_tensor(wave).detach().float().cpu().reshape(-1).clamp(-1, 1)
    if sample_rate not in AAC_RATES:
        audio = resample(audio, sample_rate, 48_000)
        sample_rate = 48_000
    samples = audio.numpy()
    duration = audio.numel() / sample_rate
    info = probe(video)  # also rejects non-media and audio-only files early
    rotation = info.rotation
    copy = info.codec in COPYABLE and start == 0 and not reencode
    plan = plan_copy(video, duration) if copy else None

    def write(tmp: Path, copy: bool) -> None:
        with open_media(video) as source, av.open(str(tmp), mode="w", format="mp4") as target:
            vin = source.streams.video[0]
            if copy and plan is not None:
                _write_copy(source, target, vin, plan, rotation, samples, sample_rate)
            else:
                _write_reencoded(source, target, vin, info.first_time, start, duration, rotation, samples, sample_rate)

    def write_checked(tmp: Path) -> None:
        nonlocal samples
        peak = 0.0
        for attempt in range(AAC_TRIES):
            if plan is not None:
                write(tmp, copy=True)
                if not copy_is_aligned(tmp, plan.frame_ticks, duration):
                    write(tmp, copy=False)
            else:
                write(tmp, copy=False)
            peak = aac_peak(tmp)
            if peak <= AAC_CEILING:
                return
            # AAC overshoots on near-square waves, and not in proportion to the gain: each retry takes
            # another 3 % off on top of the measured ratio, so the loop converges
            samples = samples * (0.97 ** (attempt + 1) * AAC_CEILING / peak)
        raise MediaError(f"the AAC track still peaked at {peak:.3f} after {AAC_TRIES} quieter encodings")

    if not math.isfinite(duration) or duration <= 0:
        raise ValueError("no audio samples to mux")
    atomic_write(out, write_checked)
    return out
