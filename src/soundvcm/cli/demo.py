"""``soundvcm demo``: the gradio web page over the inference API (optional extra ``[demo]``)."""

from __future__ import annotations

import argparse

from soundvcm.cli.common import add_device_option, add_precision_option, positive_float


def register(commands) -> None:
    demo = commands.add_parser(
        "demo",
        help="a web page to try models: video/text/image to audio (needs gradio: pip install 'soundvcm[demo]')",
        description="Serves a gradio page on http://HOST:PORT with video-to-audio, text-to-audio and "
        "image-to-audio tabs. Models load once at start-up; requests run one at a time.",
    )
    demo.add_argument(
        "--model",
        action="append",
        default=None,
        metavar="[LABEL=]MODEL",
        help="a shipped name, checkpoint path or hub id (repeatable; default: the shipped default)",
    )
    demo.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
    demo.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    demo.add_argument("--max-upload-mb", type=positive_float, default=50.0, help="upload size limit (default 50)")
    demo.add_argument("--max-seconds", type=positive_float, default=60.0, help="longest video taken (default 60)")
    add_device_option(demo)
    add_precision_option(demo, "the encoders, the network and the vocoder")
    demo.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from soundvcm.demo import DemoConfig, launch

    models = {}
    for item in args.model or ["default"]:
        label, _, model = item.rpartition("=")
        models[label or model] = model
    cfg = DemoConfig(models, args.host, args.port, args.max_upload_mb, args.max_seconds, args.device, args.precision)
    launch(cfg, block=True)
    return 0
