"""``soundvcm bench sync`` reads A/V alignment from pictures: known answers on frame-counter clips."""

import json

import soundvcm.bench.mux_sync as mux_sync
from media_factory import make_counter_video
from soundvcm.cli import main


def test_an_aligned_mux_reads_as_in_sync_and_a_one_frame_shift_is_caught(tmp_path, monkeypatch, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    make_counter_video(clips / "count.mp4", [i / 25 for i in range(100)], audio_rate=16_000)
    out = tmp_path / "json.json"
    assert main(["bench", "sync", str(clips), "--out", str(tmp_path / "o"), "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(r["start"], r["best_shift"]) for r in rows] == [(0.0, 0), (1.5, 0)]
    assert "| count.mp4 | h264 | 25.000 | 0 |" in capsys.readouterr().out

    real = mux_sync.mux_audio  # a mux that is one frame (40 ms) late in its picture: caught, exit 1
    monkeypatch.setattr(mux_sync, "mux_audio", lambda src, w, sr, dst, start: real(src, w, sr, dst, start=start + 0.04))
    assert main(["bench", "sync", str(clips), "--out", str(tmp_path / "o2"), "--json", str(out)]) == 1
    assert [r["best_shift"] for r in json.loads(out.read_text())] == [1, 1]


def test_a_folder_without_videos_is_one_line(tmp_path, capsys):
    assert main(["bench", "sync", str(tmp_path)]) == 2
    assert "no video files" in capsys.readouterr().err
