"""Put generated audio into the original video (mp4: video + AAC audio), atomically.

The video stream is copied packet by packet when MP4 can carry its codec (H.264, HEVC, MPEG-4,
AV1), keeping quality and taking milliseconds; anything else (VP8/VP9 in WebM, MJPEG, ...) is
re-encoded to H.264 yuv420p at the source frame rate. The video is cut to the audio's length
(packets whose timestamps lie past the end are dropped). A copied stream can only begin at a
keyframe, so a clip that starts later than 0 s is always re-encoded, to keep picture and sound
aligned. Rotation metadata is kept.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from torch import Tensor

from soundvcm.atomic import atomic_write
from soundvcm.media.audio import resample
from soundvcm.media.errors import MediaError, check_input_path
from soundvcm.media.video import probe

COPYABLE = {"h264", "hevc", "mpeg4", "av1"}
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)


def _encode_audio(container, wave: np.ndarray, sample_rate: int) -> None:
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


def mux_audio(
    video: str | Path,
    wave: Tensor | np.ndarray,
    sample_rate: int,
    out: str | Path,
    start: float = 0.0,
    reencode: bool | None = None,
) -> Path:
    """Write ``out`` (.mp4): the video from ``start`` for len(wave)/sample_rate seconds + the audio.

    ``reencode=None`` copies the video stream when its codec fits MP4 and re-encodes otherwise.
    """
    video = check_input_path(video)
    out = Path(out)
    audio = torch.as_tensor(wave).detach().float().cpu().reshape(-1).clamp(-1, 1)
    if sample_rate not in AAC_RATES:
        audio = resample(audio, sample_rate, 48_000)
        sample_rate = 48_000
    duration = audio.numel() / sample_rate
    out = out.with_suffix(".mp4")
    rotation = probe(video).rotation  # also rejects non-media and audio-only files early

    def write(tmp: Path) -> None:
        try:
            source = av.open(str(video), metadata_errors="ignore")
        except av.error.FFmpegError as exc:
            raise MediaError(f"{video}: not a readable media file ({exc})") from exc
        with source, av.open(str(tmp), mode="w", format="mp4") as target:
            if not source.streams.video:
                raise MediaError(f"{video}: no video stream to put the audio into")
            vin = source.streams.video[0]
            # a copied stream can only start at a keyframe: cut exactly (re-encode) when start > 0
            copyable = vin.codec_context.name in COPYABLE and start == 0
            copy = copyable if reencode is None else not reencode
            t0 = float(vin.start_time * vin.time_base) if vin.start_time is not None else 0.0
            if start > 0:
                source.seek(int((t0 + start) * av.time_base), any_frame=False, backward=True)
            end = t0 + start + duration
            if copy:
                vout = target.add_stream_from_template(vin)
                if rotation:
                    vout.set_display_rotation(rotation)
                _encode_audio(target, audio.numpy(), sample_rate)
                first = None
                for packet in source.demux(vin):
                    if packet.dts is None or packet.pts is None:
                        continue
                    ts = float(packet.pts * packet.time_base)
                    if ts >= end - 1e-6:
                        continue
                    if first is None:
                        first = packet.dts
                    packet.dts -= first
                    packet.pts -= first
                    packet.stream = vout
                    target.mux(packet)
            else:
                rate = vin.guessed_rate or vin.average_rate or Fraction(25)
                vout = target.add_stream("libx264", rate=rate)
                w, h = vin.codec_context.width, vin.codec_context.height
                vout.width, vout.height = w - w % 2, h - h % 2
                vout.pix_fmt = "yuv420p"
                vout.options = {"crf": "18", "preset": "veryfast"}
                if rotation:
                    vout.set_display_rotation(rotation)
                _encode_audio(target, audio.numpy(), sample_rate)
                index = 0
                for frame in source.decode(vin):
                    if frame.time is None or frame.time < t0 + start - 1e-6:
                        continue
                    if frame.time >= end - 1e-6:
                        break
                    img = frame.reformat(width=vout.width, height=vout.height, format="yuv420p")
                    img.pts = index
                    img.time_base = Fraction(1, 1) / rate
                    index += 1
                    for packet in vout.encode(img):
                        target.mux(packet)
                for packet in vout.encode(None):
                    target.mux(packet)

    atomic_write(out, write)
    return out
