"""Fixtures of the generation tests: two tiny random models (VCM and FM) and a 3 s clip, made once."""

from __future__ import annotations

import pytest

from media_factory import make_video
from model_factory import debug_model
from soundvcm.pipeline import Pipeline


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipeline")
    debug_model(d / "vcm")
    debug_model(d / "fm", objective="fm")
    make_video(d / "clip.mp4", duration=3.0, size=(96, 64), fps=24)
    return d


@pytest.fixture(scope="module")
def pipe(workdir):
    return Pipeline.load(workdir / "vcm")
