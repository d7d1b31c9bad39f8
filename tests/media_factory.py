"""Media the tests make themselves: videos whose frames encode their own timestamps.

Each frame's brightness is a known function of its presentation time (a ramp over the clip), so
a test can tell which source frame a decoder picked for each target time. Audio is a tone with
clicks at known times.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def frame_value(t: float, duration: float) -> int:
    """Brightness encoding time t (0..duration) as 16..235."""
    return int(round(16 + 219 * min(max(t / duration, 0.0), 1.0)))


def make_video(
    path: Path,
    *,
    duration: float = 2.0,
    fps: float | Fraction = 25,
    size: tuple[int, int] = (64, 48),  # (width, height)
    codec: str = "libx264",
    audio_rate: int | None = 16_000,
    rotation: int = 0,
    gray: bool = False,
    frame_times: list[float] | None = None,
    marker: bool = True,
) -> Path:
    """Write a clip; ``frame_times`` (seconds) makes a variable-frame-rate video."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    fmt = {"libx264": "yuv420p", "mpeg4": "yuv420p", "libvpx-vp9": "yuv420p", "mjpeg": "yuvj420p"}.get(codec, "yuv420p")
    if frame_times is None:
        n = int(math.floor(duration * float(fps) + 1e-9))
        frame_times = [i / float(fps) for i in range(n)]
        time_base = Fraction(1, 1) / Fraction(fps).limit_denominator(1001)
    else:
        time_base = Fraction(1, 1000)
    with av.open(str(path), mode="w") as container:
        vs = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001) if frame_times else 25)
        vs.width, vs.height, vs.pix_fmt = w, h, fmt
        vs.time_base = time_base
        vs.codec_context.time_base = time_base
        if codec == "libx264":
            vs.options = {"preset": "ultrafast", "crf": "10"}
        if rotation:
            vs.set_display_rotation(rotation)
        as_ = None
        if audio_rate:
            as_ = container.add_stream("aac", rate=audio_rate)
            as_.layout = "mono"
        for t in frame_times:
            v = frame_value(t, duration)
            img = np.full((h, w, 3), v, dtype=np.uint8)
            if marker:  # a bright square in the top-left quadrant shows orientation
                img[: max(1, h // 4), : max(1, w // 4)] = 255 if not gray else 250
            if gray:
                img[:] = img.mean(axis=2, keepdims=True).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = int(round(t / time_base))
            frame.time_base = time_base
            for packet in vs.encode(frame):
                container.mux(packet)
        for packet in vs.encode(None):
            container.mux(packet)
        if as_ is not None:
            wave = make_tone(audio_rate, duration)
            step = as_.codec_context.frame_size or 1024
            for i in range(0, len(wave), step):
                chunk = wave[None, i : i + step].astype(np.float32)
                af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                af.sample_rate = audio_rate
                af.pts = i
                for packet in as_.encode(af):
                    container.mux(packet)
            for packet in as_.encode(None):
                container.mux(packet)
    return path


def make_tone(sample_rate: int, duration: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(sample_rate * duration)) / sample_rate
    return (0.4 * np.sin(2 * math.pi * freq * t)).astype(np.float32)


def corrupt_middle(path: Path, out: Path, fraction: float = 0.5, length: int = 3000) -> Path:
    """Overwrite bytes in the middle of a file with garbage (the header stays intact)."""
    data = bytearray(path.read_bytes())
    at = int(len(data) * fraction)
    rng = np.random.default_rng(0)
    data[at : at + length] = rng.integers(0, 256, size=min(length, len(data) - at), dtype=np.uint8).tobytes()
    out.write_bytes(bytes(data))
    return out


# ----- frame-counter clips for sync tests ----------------------------------------------------
COUNTER_BITS = 10


def counter_image(index: int, width: int = 160, height: int = 32) -> np.ndarray:
    """A frame showing ``index`` as COUNTER_BITS black/white bars (robust to lossy coding)."""
    img = np.zeros((height, width, 3), np.uint8)
    bar = width // COUNTER_BITS
    for b in range(COUNTER_BITS):
        if index >> b & 1:
            img[:, b * bar : (b + 1) * bar] = 255
    return img


def read_counter(img: np.ndarray) -> int:
    """The index a :func:`counter_image` shows (img: (H, W, 3) uint8)."""
    bar = img.shape[1] // COUNTER_BITS
    return sum(1 << b for b in range(COUNTER_BITS) if img[:, b * bar + 2 : (b + 1) * bar - 2].mean() > 127)


def make_counter_video(
    path: Path,
    frame_times: list[float],
    *,
    codec: str = "libx264",
    b_frames: int = 3,
    gop: int = 12,
    audio_rate: int | None = 16_000,
    fixed_b_frames: bool = False,
) -> Path:
    """Frame i (shown at frame_times[i]) displays the number i; H.264 with B-frames by default
    (``fixed_b_frames``: always ``b_frames`` of them between references, x264's b-adapt=0, so a
    reference shown late is decoded before the B-frames shown early)."""
    time_base = Fraction(1, 1000)
    with av.open(str(path), mode="w") as container:
        vs = container.add_stream(codec, rate=25)
        vs.width, vs.height, vs.pix_fmt = 160, 32, "yuv420p"
        vs.time_base = time_base
        vs.codec_context.time_base = time_base
        if codec == "libx264":
            vs.options = {"preset": "medium", "crf": "10", "bf": str(b_frames), "g": str(gop)}
            if fixed_b_frames:
                vs.options["x264-params"] = "b-adapt=0"
        as_ = None
        if audio_rate:
            as_ = container.add_stream("aac", rate=audio_rate)
            as_.layout = "mono"
        for i, t in enumerate(frame_times):
            frame = av.VideoFrame.from_ndarray(counter_image(i), format="rgb24")
            frame.pts, frame.time_base = int(round(t / time_base)), time_base
            for packet in vs.encode(frame):
                container.mux(packet)
        for packet in vs.encode(None):
            container.mux(packet)
        if as_ is not None:
            wave = make_tone(audio_rate, frame_times[-1] + 0.2)
            for i in range(0, len(wave), 1024):
                af = av.AudioFrame.from_ndarray(wave[None, i : i + 1024], format="fltp", layout="mono")
                af.sample_rate, af.pts = audio_rate, i
                for packet in as_.encode(af):
                    container.mux(packet)
            for packet in as_.encode(None):
                container.mux(packet)
    return path


def edit_list_copy(src: Path, dst: Path, cut: float) -> Path:
    """What ``ffmpeg -ss CUT -i SRC -c copy DST`` writes: packets from the keyframe before ``cut``,
    timestamps shifted so ``cut`` is 0; the MP4 muxer hides the frames before it with an edit list."""
    with av.open(str(src)) as source, av.open(str(dst), mode="w", format="mp4") as target:
        vin = source.streams.video[0]
        vout = target.add_stream_from_template(vin)
        shift = int(round(cut / vin.time_base))
        source.seek(int(cut * av.time_base), backward=True, any_frame=False)
        for packet in source.demux(vin):
            if packet.dts is None:
                continue
            packet.pts -= shift
            packet.dts -= shift
            packet.stream = vout
            target.mux(packet)
    return dst


def make_counter_avi(path: Path, frames: int, fps: int = 24, codec: str = "mpeg4", b_frames: int = 2) -> Path:
    """An AVI whose frame i displays i, with B-frames, at a constant ``fps``, plus PCM audio. AVI stores
    no presentation times: FFmpeg derives them from the decode order, so with B-frames the first
    picture comes out one frame period late while the stream's ``start_time`` says 0 (issue 24's
    Megamind.avi)."""
    with av.open(str(path), mode="w") as container:
        vs = container.add_stream(codec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = 160, 32, "yuv420p"
        vs.options = {"bf": str(b_frames), "g": "12"} | ({"qscale": "2"} if codec == "mpeg4" else {"crf": "10"})
        audio = container.add_stream("pcm_s16le", rate=16_000)
        audio.layout = "mono"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(counter_image(i), format="rgb24")
            frame.pts = i
            for packet in vs.encode(frame):
                container.mux(packet)
        for packet in vs.encode(None):
            container.mux(packet)
        wave = (make_tone(16_000, frames / fps) * 20_000).astype(np.int16)
        for i in range(0, len(wave), 1024):
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[None, i : i + 1024]), format="s16", layout="mono")
            af.sample_rate, af.pts = 16_000, i
            for packet in audio.encode(af):
                container.mux(packet)
        for packet in audio.encode(None):
            container.mux(packet)
    return path


def clicks(sr: int, seconds: float, offset_ms: float = 0.0, freq: float = 600.0) -> np.ndarray:
    """A tone burst every 0.5 s (plus a little noise), shifted by offset_ms."""
    t = np.arange(int(sr * seconds)) / sr
    start = ((t - offset_ms / 1000) % 0.5) < 0.05
    rng = np.random.default_rng(int(freq))
    return (0.5 * np.sin(2 * math.pi * freq * t) * start + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def make_dir(p: Path) -> Path:
    p.mkdir()
    return p


def write_bytes(p: Path, data: bytes) -> Path:
    p.write_bytes(data)
    return p


def tone_file(p: Path) -> Path:
    """A 1 s tone at 16 kHz written to ``p`` (any suffix soundfile writes)."""
    from soundvcm.media.audio import write_audio

    write_audio(p, make_tone(16_000, 1.0), 16_000)
    return p
