"""The mp4 never runs past its sound (issue 34, item 5): the copy path keeps whole packets in
decode order, so a reference frame *shown* after the audio's end but *decoded* before a frame shown
within it would carry a picture past the end; such clips are re-encoded instead, on every path."""

from __future__ import annotations

import av
import pytest
import torch

from media_factory import make_counter_video
from soundvcm.cli import main
from soundvcm.media.mux import mux_audio, plan_copy

SPARSE = [0, 1.6, 5.6, 9.6, 10.4]  # the sweep's clip: frames 0.8-4 s apart


def _video_times(path) -> tuple[list[float], float, float]:
    """(shown frame times, the video's end (last pts + its duration), the audio's duration), seconds."""
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        packets = [p for p in c.demux(v) if p.pts is not None]
        shown = sorted(float(p.pts * v.time_base) for p in packets)
        end = max(float((p.pts + p.duration) * v.time_base) for p in packets)
        return shown, end, float(a.duration * a.time_base)


def test_a_late_reference_frame_forces_a_re_encode(tmp_path):
    src = make_counter_video(tmp_path / "pyramid.mp4", SPARSE, fixed_b_frames=True)
    with av.open(str(src)) as c:  # the frame shown at 10.4 s is decoded second: before 1.6 s's
        decode_order = [float(p.pts * p.time_base) for p in c.demux(c.streams.video[0]) if p.pts is not None]
    assert decode_order[:2] == [0.0, 10.4]
    assert plan_copy(src, 4.0) is None
    out = mux_audio(src, torch.zeros(16_000 * 4), 16_000, tmp_path / "out.mp4")
    shown, end, audio = _video_times(out)
    assert shown == [0.0, 1.6] and end == pytest.approx(4.0, abs=1e-3) and audio == pytest.approx(4.0, abs=0.03)


@pytest.mark.parametrize("fixed", [True, False])
def test_generate_cuts_the_picture_at_the_sound_on_the_default_path(tmp_path, fixed):
    src = make_counter_video(tmp_path / "sparse.mp4", SPARSE, fixed_b_frames=fixed)
    assert main(["generate", str(src), "--model", "default", "--duration", "4", "--out", str(tmp_path / "out")]) == 0
    shown, end, audio = _video_times(tmp_path / "out" / "sparse.mp4")
    assert shown == [0.0, 1.6]  # nothing of 5.6 s or 10.4 s
    assert end <= audio + 1e-3 and end == pytest.approx(4.0, abs=1e-3)


def test_a_plain_clip_cut_mid_gop_shows_nothing_after_the_end(tmp_path):
    """25 fps with B-frames, cut at 1.0 s: whatever the path, the last picture is the one of 0.96 s."""
    src = make_counter_video(tmp_path / "cfr.mp4", [i / 25 for i in range(75)], fixed_b_frames=True)
    out = mux_audio(src, torch.zeros(16_000), 16_000, tmp_path / "out.mp4")
    shown, end, _ = _video_times(out)
    assert max(shown) == pytest.approx(0.96, abs=1e-3) and len(shown) == 25
    assert end == pytest.approx(1.0, abs=1e-3)
