"""``soundvcm bench embed``: throughput of the evaluation embedders on this machine (8 s clips per second).

aisfx runs with its real weights; PANNs, VGGish, PaSST and ImageBind's audio branch are timed
random-initialised (throughput does not depend on the weights, and theirs are not shipped).
Each embedder gets one warm-up clip, then all clips are timed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch


def embedders() -> dict[str, tuple[int, Callable[[torch.Tensor], Any]]]:
    """name -> (its sample rate, embed one waveform)."""
    from soundvcm.evaluation import aisfx, passt
    from soundvcm.evaluation.imagebind import ImageBind, ImageBindConfig, audio_clips
    from soundvcm.evaluation.panns import Cnn14
    from soundvcm.evaluation.vggish import VGGish

    net = aisfx.load_aisfx()
    panns, vgg, passt_net = Cnn14().eval(), VGGish().eval(), passt.PaSST().eval()
    ib_audio = ImageBind(ImageBindConfig(vision_dim=64, vision_blocks=1, vision_heads=4)).eval()  # full audio branch

    def inference(fn: Callable[[torch.Tensor], Any]) -> Callable[[torch.Tensor], Any]:
        def run(wave: torch.Tensor) -> Any:
            with torch.inference_mode():
                return fn(wave)

        return run

    return {
        "aisfx (real weights)": (aisfx.SAMPLE_RATE, lambda w: aisfx.embed_clip(net, w)),
        "PANNs Cnn14 16k": (16_000, inference(lambda w: panns(w[None]))),
        "VGGish": (16_000, inference(vgg.embed)),
        "PaSST-S (10 s input)": (passt.SAMPLE_RATE, lambda w: passt.embed_clip(passt_net, w)),
        "ImageBind audio (3 x 2 s clips)": (16_000, inference(lambda w: ib_audio.encode_audio(audio_clips(w)))),
    }


def run_embed_bench(clips: int = 16) -> list[dict[str, Any]]:
    from soundvcm.media.audio import resample

    g = torch.Generator().manual_seed(0)
    waves = [torch.randn(8 * 44_100, generator=g) * 0.1 for _ in range(clips)]
    rows = []
    for name, (sr, fn) in embedders().items():
        inputs = [resample(c, 44_100, sr) if sr != 44_100 else c for c in waves]
        fn(inputs[0])
        start = time.perf_counter()
        for clip in inputs:
            fn(clip)
        seconds = time.perf_counter() - start
        rows.append(
            {
                "embedder": name,
                "clips": clips,
                "seconds": seconds,
                "clips_per_s": clips / seconds,
                "threads": torch.get_num_threads(),
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| embedder | clips (8 s) | seconds | clips/s | threads |", "|---|---|---|---|---|"]
    lines += [
        f"| {r['embedder']} | {r['clips']} | {r['seconds']:.2f} | {r['clips_per_s']:.2f} | {r['threads']} |"
        for r in rows
    ]
    return "\n".join(lines)
