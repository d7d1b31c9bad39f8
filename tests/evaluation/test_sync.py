"""The lite2 sync path (issue 23): tokens in time order, one per latent frame, aligned by timestamps,
carrying signed motion; and the sequence layout that carries them into the network."""

from __future__ import annotations

import math
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from soundvcm.encoders import encoder_spec
from soundvcm.encoders.motion_flow import MotionFlowSync, cell_flow
from soundvcm.media.video import load_video
from soundvcm.sequence import SEQUENCE_LITE2, SequenceConfig


def _square(x: int, y: int, size: int = 64, side: int = 12) -> torch.Tensor:
    """A bright square with a soft edge on black: (size, size) uint8."""
    img = torch.zeros(size, size)
    img[y : y + side, x : x + side] = 255.0
    img = torch.nn.functional.avg_pool2d(img[None, None], 3, 1, 1)[0, 0]
    return img.to(torch.uint8)


def test_cell_flow_is_signed_and_zero_for_still_frames():
    a, right, down = _square(20, 20), _square(22, 20), _square(20, 23)

    def f(u, v):
        return cell_flow(u[None, None].float() / 255, v[None, None].float() / 255)[0]  # (2, 8, 8)

    rx = f(a, right)
    cells = rx[0].abs() > 0.3
    assert cells.any() and (rx[0][cells] > 0).all()  # moving right: +x where the square is
    assert rx[1].abs().max() < rx[0].abs().max() / 3  # and little y
    dy = f(a, down)
    assert dy[1].max() > 0.3 and dy[1].max() > -dy[1].min()  # moving down: +y
    back = f(right, a)
    torch.testing.assert_close(back[0].sum(), -rx[0].sum(), rtol=0.35, atol=0.05)  # the reversal flips the sign
    assert f(a, a).abs().max() == 0


def test_tokens_follow_time_and_repeated_frames_move_nothing():
    sync = MotionFlowSync()
    still = [_square(20, 20)] * 10
    # the square moves right from sample 10 on, one frame in two repeated (a 43 fps video at 86 fps)
    moving = [_square(20 + 2 * (i // 2), 20) for i in range(10)]
    frames = torch.stack(still + moving)[None, :, None]  # (1, 20, 1, 64, 64)
    tokens = sync(frames)
    assert tokens.shape == (1, 10, 192)
    flow, energy = tokens[0, :, :128], tokens[0, :, 128:]
    assert flow[:5].abs().max() == 0 and energy[:5].max() == 0  # nothing moves in the first 5 tokens
    assert (flow[6:, :64].sum(1) > 0).all()  # then every token sees the rightward motion
    with pytest.raises(ValueError, match="at least 2 frames"):
        sync(frames[:, :1])


def test_the_frames_layout_gives_one_token_per_latent_frame():
    seq = SEQUENCE_LITE2.with_duration(4.0)
    assert seq.latent_seq_len == 173 and seq.sync_seq_len == 173 and seq.sync_frames_needed == 346
    assert math.isclose(seq.sync_fps, 2 * seq.latent_rate) and seq.min_duration == 1 / 8
    old = SequenceConfig(sample_rate=22_050, hop_length=256, duration=4.0)
    assert old.sync_seq_len == 88 and old.sync_frames_needed == 96 and old.min_duration == 0.64
    with pytest.raises(ValueError, match="sync_layout"):
        SequenceConfig(sync_layout="interleaved")
    spec = encoder_spec("lite2")
    assert spec.sync_dim == 192 and spec.clip_frames.height == 160 and spec.sequence.sync_layout == "frames"
    from soundvcm.network.mmdit import network_preset

    with pytest.raises(ValueError, match="sync_dim 128.*sequence.sync_fps.*sync_layout"):
        spec.check_network(network_preset("lite_small"))  # a lite network does not fit lite2's features
    spec.check_network(network_preset("lite2_small"))


def _jump_video(path, fps: int, jump_at: float, duration: float = 4.0):
    """A square that is still, then jumps 10 px right at ``jump_at`` s and stays: one motion event."""
    with av.open(str(path), mode="w") as c:
        vs = c.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = 128, 128, "yuv420p"
        vs.options = {"preset": "ultrafast", "crf": "5", "bf": "0"}
        for i in range(int(duration * fps)):
            img = np.zeros((128, 128, 3), np.uint8)
            x = 40 + (20 if i / fps >= jump_at - 1e-9 else 0)
            img[40:70, x : x + 30] = 255
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for p in vs.encode(frame):
                c.mux(p)
        for p in vs.encode(None):
            c.mux(p)
    return path


@pytest.mark.parametrize("fps", [24, 25, 30, 60])
def test_a_motion_lands_on_the_latent_frame_of_its_time(tmp_path, fps):
    """Aligned by timestamps, whatever the video's frame rate: the token with the most motion is
    the latent frame the jump happens in (the nearest-frame rule may show it up to half a video
    frame early: one token at most)."""
    jump = 2.0
    video = _jump_video(tmp_path / f"jump{fps}.mp4", fps, jump)
    spec = encoder_spec("lite2")
    seq = spec.sequence.with_duration(4.0)
    clip = load_video(video, {"sync": spec.sync_frames}, duration=4.0)
    from soundvcm.encoders.base import take_frames

    frames = take_frames(clip.frames["sync"], seq.sync_frames_needed)
    tokens = MotionFlowSync()(frames[None])[0]
    energy = tokens[:, 128:].sum(1)
    expected = int(jump * seq.latent_rate)
    early = int((jump - 0.5 / fps) * seq.latent_rate)
    assert tokens.shape[0] == seq.latent_seq_len
    assert int(energy.argmax()) in {early, expected}, (int(energy.argmax()), early, expected)
    assert (energy > 0.5 * energy.max()).sum() <= 2  # one event, not smeared over the clip
