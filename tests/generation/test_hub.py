"""Loading by hub id from a pre-filled huggingface_hub cache (offline), and packaging for a hub."""

from __future__ import annotations

import shutil

import pytest

from media_factory import make_video
from soundvcm.cli import main
from soundvcm.hub import is_hub_id, resolve_model
from soundvcm.network.checkpoint import save_network
from soundvcm.network.mmdit import MMDiT
from soundvcm.pipeline import Pipeline
from soundvcm.spec import preset_for_encoders

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An offline huggingface_hub cache holding org/tiny (main and tag v1) as `model package` wrote it."""
    pytest.importorskip("huggingface_hub")
    from huggingface_hub import constants

    config, encoder_set = preset_for_encoders("debug", "lite")
    save_network(tmp_path / "ckpt", MMDiT(config), preset="debug", encoder_set=encoder_set, objective="fm")
    assert main(["model", "package", str(tmp_path / "ckpt"), str(tmp_path / "tiny")]) == 0
    repo = tmp_path / "cache" / "models--org--tiny"
    shutil.copytree(tmp_path / "tiny", repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    for ref in ("main", "v1"):
        (repo / "refs" / ref).write_text(COMMIT)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def test_package_writes_a_pushable_folder(hub_cache):
    folder = hub_cache / "tiny"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "model.json", "model.safetensors"]
    card = (folder / "README.md").read_text()
    assert "encoder set `lite`" in card and "objective `fm`" in card and "euler" in card


def test_hub_ids_load_from_the_cache_offline(hub_cache):
    assert is_hub_id("org/tiny") and is_hub_id("org/tiny@v1") and not is_hub_id("default")
    path = resolve_model("org/tiny@v1")
    assert path.name == "model" and COMMIT in str(path)
    spec, _ = Pipeline.peek("org/tiny")
    assert spec.objective == "fm" and spec.sampler.kind == "euler"
    pipe = Pipeline.load(f"org/tiny@{COMMIT}", pretrained_encoders=False)
    video = make_video(hub_cache / "v.mp4", duration=1.5, size=(64, 48))
    assert pipe.generate(video=video, duration=1.0, options=pipe.sampler(steps=2)).nfe == 4


def test_a_hub_id_not_cached_offline_is_one_line(hub_cache, capsys):
    video = make_video(hub_cache / "v.mp4", duration=1.5, size=(64, 48))
    code = main(["generate", str(video), "--model", "org/missing@v2", "--out", str(hub_cache / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        code == 2
        and len(err) == 1
        and "org/missing@v2: no local checkpoint by that name, and not in the local hub cache" in err[0]
    )
    assert "huggingface-cli download org/missing --revision v2" in err[0]


def test_a_local_folder_that_looks_like_an_id_stays_local(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    config, encoder_set = preset_for_encoders("debug", "lite")
    save_network(tmp_path / "runs" / "m", MMDiT(config), preset="debug", encoder_set=encoder_set)
    assert not is_hub_id("runs/m") and resolve_model("runs/m").name == "m"
