"""Mux: the generated audio into the original video, copied or re-encoded, and picture and sound in sync."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from media_factory import (
    edit_list_copy,
    make_counter_avi,
    make_counter_video,
    make_tone,
    make_video,
    read_counter,
)
from soundvcm.media import (
    FrameSpec,
    MediaError,
    load_audio,
    load_video,
    mux_audio,
    probe,
    write_audio,
)


def _audio_only(d: Path) -> Path:
    path = d / "tone.flac"
    write_audio(path, make_tone(16_000, 1.0), 16_000)
    return path


# ----- mux ---------------------------------------------------------------------------------
@pytest.mark.parametrize("codec, suffix, copied", [("libx264", ".mp4", True), ("libvpx-vp9", ".webm", False)])
def test_mux_copies_or_reencodes(tmp_path, codec, suffix, copied):
    src = make_video(tmp_path / f"src{suffix}", duration=2.0, codec=codec, audio_rate=None, size=(64, 48))
    audio = torch.from_numpy(make_tone(22_050, 1.0))
    out = mux_audio(src, audio, 22_050, tmp_path / "out.mp4")
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert c.streams.audio[0].codec_context.name == "aac"
        frames = sum(1 for _ in c.decode(video=0))
    assert frames == 25  # cut to the audio's 1 s at 25 fps
    back, sr = load_audio(out)
    assert abs(back.numel() / sr - 1.0) < 0.05
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"src{suffix}", "out.mp4"])


def test_mux_keeps_rotation_and_refuses_audio_only(tmp_path):
    src = make_video(tmp_path / "rot.mp4", rotation=90, audio_rate=None)
    out = mux_audio(src, torch.zeros(16_000), 16_000, tmp_path / "o.mp4")
    assert probe(out).rotation == 90
    with pytest.raises(MediaError, match="no video stream"):
        mux_audio(_audio_only(tmp_path), torch.zeros(16_000), 16_000, tmp_path / "x.mp4")
    assert not (tmp_path / "x.mp4").exists()


# ----- mux: picture and sound stay in sync ---------------------------------------------------
VFR_TIMES = [0, 0.05, 0.3, 0.31, 0.9, 1.2, 1.25, 1.9, 2.3, 2.9]
SYNC_CASES = {
    # name: (frame times, codec, edit-list cut or None, mux start)
    "b_frames": ([i / 25 for i in range(75)], "libx264", None, 0.0),
    "5fps": ([i / 5 for i in range(15)], "libx264", None, 0.0),
    "120fps": ([i / 120 for i in range(360)], "libx264", None, 0.0),
    "vfr": (VFR_TIMES, "libx264", None, 0.0),
    "edit_list": ([i / 25 for i in range(75)], "libx264", 1.04, 0.0),
    "start_0.5": ([i / 25 for i in range(75)], "libx264", None, 0.5),
    "start_vfr": (VFR_TIMES, "libx264", None, 0.6),
    "vp9_reencoded": ([i / 25 for i in range(75)], "libvpx-vp9", None, 0.0),
}


def _shown(path: Path) -> tuple[float, list[tuple[float, int]]]:
    """(audio start, [(display time, counter) per displayed video frame]) as a player sees them."""
    with av.open(str(path)) as c:
        audio_start = next(c.decode(c.streams.audio[0])).time
    with av.open(str(path)) as c:
        frames = [(f.time, read_counter(f.to_ndarray(format="rgb24"))) for f in c.decode(c.streams.video[0])]
    return audio_start, frames


@pytest.mark.parametrize("name", list(SYNC_CASES))
def test_mux_keeps_picture_and_sound_in_sync(tmp_path, name):
    times, codec, cut, start = SYNC_CASES[name]
    suffix = ".webm" if codec == "libvpx-vp9" else ".mp4"
    audio_rate = 16_000 if suffix == ".mp4" else None  # WebM takes no AAC
    src = make_counter_video(tmp_path / f"src{suffix}", times, codec=codec, audio_rate=audio_rate)
    if cut is not None:  # frames before the cut are in the file but hidden by an edit list
        src = edit_list_copy(src, tmp_path / "cut.mp4", cut)
        times = [t - cut for t in times]
    duration = 1.5
    out = mux_audio(src, torch.zeros(int(16_000 * duration)), 16_000, tmp_path / "out.mp4", start=start)
    audio_start, shown = _shown(out)
    gaps = np.diff(times)
    half_frame = 0.5 * float(gaps.min())
    # the frame on screen at `start` is shown first, at time 0
    on_screen = max(i for i, t in enumerate(times) if t <= start + 1e-9)
    assert shown[0][1] == on_screen, shown[:3]
    offsets = [ft - audio_start - max(times[i] - start, 0.0) for ft, i in shown]
    assert max(abs(o) for o in offsets) <= half_frame, offsets
    # every frame of [start, start + duration) is shown, and nothing from before
    expected = [i for i, t in enumerate(times) if start < t < start + duration - 1e-9]
    assert [i for _, i in shown[1:] if times[i] < start + duration - 1e-9] == expected
    assert all(times[i] >= start - 1e-9 or i == on_screen for _, i in shown)


def test_load_video_starts_at_the_edit_list(tmp_path):
    src = make_counter_video(tmp_path / "src.mp4", [i / 25 for i in range(75)], audio_rate=None)
    cut = edit_list_copy(src, tmp_path / "cut.mp4", 1.04)  # frame 26 is the first one shown
    clip = load_video(cut, {"v": FrameSpec(25, 32, 160)}, duration=1.0)
    indices = [read_counter(f.permute(1, 2, 0).numpy()) for f in clip.frames["v"]]
    assert indices == list(range(26, 51))


# The encoders' time 0 (load_video) and the muxed picture's time 0 are the same frame: for each
# target time k / fps, the frame the encoders were given is the frame on screen in the output.
AGREE_CASES = {
    # name: (maker, fps, mux start)
    "avi_mpeg4_bframes_copy": (lambda p: make_counter_avi(p.with_suffix(".avi"), 60, 24, "mpeg4"), 24, 0.0),
    "avi_h264_bframes_copy": (lambda p: make_counter_avi(p.with_suffix(".avi"), 60, 30, "libx264"), 30, 0.0),
    "avi_mpeg4_bframes_reencode": (lambda p: make_counter_avi(p.with_suffix(".avi"), 60, 24, "mpeg4"), 24, 0.5),
    "mp4_bframes_copy": (lambda p: make_counter_video(p, [i / 25 for i in range(60)]), 25, 0.0),
    "mp4_edit_list_copy": (
        lambda p: edit_list_copy(make_counter_video(p, [i / 25 for i in range(75)]), p.with_name("cut.mp4"), 1.04),
        25,
        0.0,
    ),
}


@pytest.mark.parametrize("name", list(AGREE_CASES))
def test_encoders_and_mux_agree_on_time_zero(tmp_path, name):
    maker, fps, start = AGREE_CASES[name]
    src = maker(tmp_path / "src.mp4")
    duration = 1.5
    clip = load_video(src, {"v": FrameSpec(fps, 32, 160)}, duration=duration, start=start)
    seen = [read_counter(f.permute(1, 2, 0).numpy()) for f in clip.frames["v"]]
    out = mux_audio(src, torch.zeros(int(16_000 * duration)), 16_000, tmp_path / "out.mp4", start=start)
    audio_start, shown = _shown(out)
    half_frame = 0.5 / fps
    for k, counter in enumerate(seen):
        t = k / fps  # the target time on the output's clock (audio sample 0 = time 0)
        on_screen = [c for ft, c in shown if ft - audio_start <= t + 1e-6]
        assert on_screen and on_screen[-1] == counter, (k, counter, shown[:4], audio_start)
    # and the first picture of the output starts with its sound, within half a frame
    assert abs(shown[0][0] - audio_start) <= half_frame


@pytest.mark.parametrize("start", [0.0, 0.5])  # the copy path and the re-encode path
def test_a_sparse_vfr_video_is_cut_to_the_audio_length(tmp_path, start):
    """Issue 24: frames at 0, 1.6, 5.6, 9.6 and 10.4 s; 4.04 s of audio. The mp4 ends with its sound:
    the picture on screen at the end stays up to it (not to the next frame 1.5 s later)."""
    src = make_counter_video(tmp_path / "sparse.mp4", [0, 1.6, 5.6, 9.6, 10.4], audio_rate=16_000)
    seconds = 4.04
    out = mux_audio(src, torch.zeros(int(16_000 * seconds)), 16_000, tmp_path / "out.mp4", start=start)
    with av.open(str(out)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        video_end = max(float((p.pts + p.duration) * v.time_base) for p in c.demux(v) if p.pts is not None)
        assert abs(c.duration / 1e6 - seconds) < 0.03
        assert abs(float(a.duration * a.time_base) - seconds) < 0.03
    assert abs(video_end - seconds) < 1e-3, video_end
    _, shown = _shown(out)
    assert [i for _, i in shown] == [0, 1]  # the frames of [start, start + 4.04)
