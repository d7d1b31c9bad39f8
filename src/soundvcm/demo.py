"""``soundvcm demo``: a web page to try a model (gradio, optional extra ``[demo]``).

Three tabs (video-to-audio, text-to-audio, image-to-audio) over the one inference API
(:class:`soundvcm.pipeline.Pipeline` and :func:`soundvcm.generate.run_job`, as ``soundvcm
generate`` uses it). Models load once at start-up; gradio's queue runs one request at a time, so
CPU/GPU work is serialised. Each request writes into its own folder under a private temporary
root; folders of finished requests are removed on the next request and the root at exit, and
gradio's own copies are purged after ``keep_s`` seconds. The server listens on 127.0.0.1 unless
told otherwise; uploads are capped in size (by gradio, before our code runs) and in length (a
video longer than ``max_seconds`` is refused with a message in the page, as are unreadable files
and files of the wrong kind). Nothing a request does can stop the server.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soundvcm.atomic import temporary_dir
from soundvcm.generate import GenerateRequest, Job, run_job
from soundvcm.media.errors import MediaError
from soundvcm.media.video import probe
from soundvcm.pipeline import Pipeline

_GRADIO_TEMP: str | None = None  # the GRADIO_TEMP_DIR this process set (a user's own is left alone)
INSTALL_HINT = "the web demo needs gradio: pip install 'soundvcm[demo]' (or pip install gradio)"


@dataclass
class DemoConfig:
    models: dict[str, str] = field(default_factory=lambda: {"default": "default"})  # label -> model
    host: str = "127.0.0.1"
    port: int = 7860
    max_upload_mb: float = 50.0
    max_seconds: float = 60.0
    device: str = "auto"
    precision: str = "auto"  # soundvcm.precision
    keep_s: int = 600  # gradio's cached copies of outputs are removed after this long


class DemoBackend:
    """Everything but the page: models, per-request folders, checks and the generation call."""

    def __init__(self, cfg: DemoConfig, pipelines: dict[str, Pipeline] | None = None):
        self.cfg = cfg
        self.pipes = pipelines or {
            label: Pipeline.load(m, device=cfg.device, precision=cfg.precision) for label, m in cfg.models.items()
        }
        self.root = temporary_dir("soundvcm-demo-")  # earlier demos' folders, if their process is gone, are removed
        self.count = 0
        atexit.register(shutil.rmtree, self.root, True)
        # gradio's uploads and cached outputs go inside our folder, so they go with it at exit (gradio
        # reads this when it is first imported: build_app imports it after this); a user's own choice stays
        global _GRADIO_TEMP
        if os.environ.get("GRADIO_TEMP_DIR") in (None, _GRADIO_TEMP):  # unset, or set by an earlier backend
            _GRADIO_TEMP = os.environ["GRADIO_TEMP_DIR"] = str(self.root / "gradio")

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def _request_dir(self) -> Path:
        requests = self.root / "requests"  # beside gradio's own folder (uploads), which must stay
        for old in requests.glob("request_*"):  # earlier requests: gradio has copied what it serves
            shutil.rmtree(old, ignore_errors=True)
        self.count += 1
        folder = requests / f"request_{self.count:06d}"
        folder.mkdir(parents=True)
        return folder

    def check_video(self, path: str | None) -> None:
        if not path:
            raise ValueError("upload a video first")
        name = Path(path).name
        try:
            info = probe(path)
        except (MediaError, OSError, ValueError) as exc:  # the message without gradio's upload folder
            reason = str(exc).replace(str(path), name).replace(str(Path(path).parent) + "/", "")
            raise ValueError(f"{name}: this file cannot be used as a video ({reason})") from None
        if info.duration > self.cfg.max_seconds:
            limit = self.cfg.max_seconds
            raise ValueError(f"{name} is {info.duration:.1f} s long; this demo takes videos up to {limit:g} s")

    def _fields(self, model: str, duration: Any, steps: Any, seed: Any) -> tuple[Pipeline, float, int, int]:
        """The numeric fields as numbers in range, or a ValueError whose message the page shows as is."""
        if model not in self.pipes:
            raise ValueError(f"choose a model: {', '.join(self.pipes)}")
        pipe = self.pipes[model]
        duration = _number(duration, "duration (s)")
        steps, seed = int(_number(steps, "steps", whole=True)), int(_number(seed, "seed", whole=True))
        shortest = pipe.min_duration
        if not shortest <= duration <= self.cfg.max_seconds:
            raise ValueError(f"duration must be from {shortest:.2f} to {self.cfg.max_seconds:g} s, got {duration:g}")
        if not 1 <= steps <= MAX_STEPS:
            raise ValueError(f"steps must be from 1 to {MAX_STEPS}, got {steps}")
        if not -1 <= seed < 2**63:
            raise ValueError(f"seed must be -1 (random) or a whole number from 0 to 2^63 - 1, got {seed}")
        return pipe, duration, steps, seed

    def generate(
        self,
        mode: str,
        media: str | None,
        prompt: str,
        negative: str,
        seed: Any,
        steps: Any,
        duration: Any,
        model: str,
    ) -> tuple[str | None, str, str, str]:
        """(mp4 or None, audio, spectrogram png, markdown of stage times and NFE). Every field is checked
        first, whatever the page sent (text, None, NaN, a huge number): a bad one is a ValueError whose
        message the page shows as it is."""
        pipe, duration, steps, seed = self._fields(model, duration, steps, seed)
        if mode == "video":
            self.check_video(media)
        elif mode == "image" and not media:
            raise ValueError("upload an image first")
        elif mode == "text" and not (prompt or "").strip():
            raise ValueError("write a prompt first")
        prompt, negative = prompt or "", negative or ""
        seed = random.randrange(2**31) if seed < 0 else seed
        folder = self._request_dir()
        source = Path(media) if media else None
        job = Job(
            "output",
            video=source if mode == "video" else None,
            image=source if mode == "image" else None,
            prompt=prompt.strip() or None,
        )
        request = GenerateRequest(
            duration=duration, sampler=pipe.sampler(steps=steps), seed=seed, negative_prompt=negative.strip() or None,
            plot=True,
        )  # fmt: skip
        start = time.perf_counter()
        try:
            result, written = run_job(pipe, job, folder, request)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        by_suffix = {p.suffix: str(p) for p in written}
        rows = "".join(f"| {k} | {v:.2f} |\n" for k, v in result.timings.items())
        report = (
            f"**{result.nfe} network evaluations**, seed {seed}, {time.perf_counter() - start:.1f} s in all\n\n"
            f"| stage | seconds |\n|---|---|\n{rows}"
        )
        if result.warnings:
            report += "\n" + "\n".join(f"- {w}" for w in result.warnings)
        return by_suffix.get(".mp4"), by_suffix[".flac"], by_suffix[".png"], report


MAX_STEPS = 1000  # as `generate --steps`


def _number(value: Any, name: str, whole: bool = False) -> float:
    """A field's value as a finite number (gradio passes numbers, None or text), else a plain message."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if whole and number != int(number):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return number


def _controls(gr, labels: list[str], consistency: bool, max_seconds: float):
    with gr.Row():
        prompt = gr.Textbox(label="prompt", placeholder="optional with a video or an image")
        negative = gr.Textbox(label="negative prompt", placeholder="what to steer away from")
    with gr.Row():
        seed = gr.Number(value=-1, label="seed (-1: random)", precision=0)
        steps = gr.Slider(
            1,
            50,
            value=1 if consistency else 25,
            step=1,
            label="steps (1-4 for consistency models, more for flow matching)",
        )
        duration = gr.Number(value=min(4.0, max_seconds), label="duration (s)")
        model = gr.Dropdown(labels, value=labels[0], label="model")
    return prompt, negative, seed, steps, duration, model


def _outputs(gr, mode: str):
    video = None
    if mode == "video":
        video = gr.Video(label="video with the new soundtrack", elem_id=f"{mode}-out-video", height=240)
    audio = gr.Audio(label="audio", type="filepath", elem_id=f"{mode}-out-audio")
    image = gr.Image(label="spectrogram", type="filepath", elem_id=f"{mode}-out-image", height=240)
    report = gr.Markdown(elem_id=f"{mode}-report")
    return video, audio, image, report


def build_app(backend: DemoBackend):
    """The gradio Blocks page (not launched)."""
    try:
        import gradio as gr
    except ImportError:
        raise ValueError(INSTALL_HINT) from None
    labels = list(backend.pipes)
    consistency = backend.pipes[labels[0]].default_sampler() == "consistency"
    with gr.Blocks(title="soundvcm", delete_cache=(backend.cfg.keep_s, backend.cfg.keep_s)) as app:
        gr.Markdown("# soundvcm\nA soundtrack for a video, a sound for a text or an image, in 1 to 4 steps.")
        for mode, title in (("video", "Video to audio"), ("text", "Text to audio"), ("image", "Image to audio")):
            with gr.Tab(title):
                media: Any = None
                if mode == "video":
                    media = gr.Video(label="video", sources=["upload"], elem_id="video-in", height=240)
                elif mode == "image":
                    media = gr.Image(label="image", type="filepath", sources=["upload"], elem_id="image-in", height=240)
                controls = _controls(gr, labels, consistency, backend.cfg.max_seconds)
                button = gr.Button("Generate", variant="primary", elem_id=f"{mode}-generate")
                video, audio, image, report = _outputs(gr, mode)
                _wire(gr, backend, mode, media, controls, button, (video, audio, image, report))
    return app


def _wire(gr, backend: DemoBackend, mode: str, media, controls, button, outputs) -> None:
    def run(*values: Any):
        media_value, rest = (values[0], values[1:]) if media is not None else (None, values)
        try:
            mp4, audio, png, report = backend.generate(mode, media_value, *rest)
        except (ValueError, OSError) as exc:  # bad input: a message in the page, the server goes on
            raise gr.Error(str(exc)) from None
        return ([mp4] if mode == "video" else []) + [audio, png, report]

    inputs = ([media] if media is not None else []) + list(controls)
    button.click(run, inputs=inputs, outputs=[o for o in outputs if o is not None], concurrency_limit=1)


def launch(cfg: DemoConfig, block: bool = True):
    """Load the models, build the page and serve it; returns the gradio app (``block=False``)."""
    backend = DemoBackend(cfg)
    app = build_app(backend)
    app.queue(default_concurrency_limit=1)
    print(json.dumps({"url": f"http://{cfg.host}:{cfg.port}", "models": list(backend.pipes)}))
    app.launch(
        server_name=cfg.host,
        server_port=cfg.port,
        max_file_size=f"{cfg.max_upload_mb:g}mb",
        prevent_thread_lock=not block,
        show_error=True,
        quiet=True,
    )
    return app, backend
