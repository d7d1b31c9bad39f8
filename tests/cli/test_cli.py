"""The command line as a user meets it: help texts, misspelled options, and user errors across every
command ending in one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from soundvcm.cli import NETWORK_PRESET_NAMES, main
from soundvcm.network.mmdit import NETWORK_PRESETS


def _run(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _help(args, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(args + ["--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


def test_help_texts_list_what_exists(capsys):
    assert set(NETWORK_PRESET_NAMES) == set(NETWORK_PRESETS)
    assert all(name in " ".join(_help(["model", "init"], capsys).split()) for name in NETWORK_PRESETS)
    evaluate = _help(["evaluate"], capsys)
    assert "not available yet" not in evaluate and "IB-Score and DeSync" in " ".join(evaluate.split())
    verify = " ".join(_help(["weights", "verify"], capsys).split())
    assert "registry names" in verify and "folder holding the files" in verify
    generate = " ".join(_help(["generate"], capsys).split())
    assert "--overwrite" in generate and "--skip-existing" in generate


def test_misspelled_option_shows_the_subcommand_usage(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["generate", "clip.mp4", "--promt", "rain"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "usage: soundvcm generate" in err and "unrecognized arguments: --promt" in err
    with pytest.raises(SystemExit):
        main(["train", "--data", "x", "--out", "y", "--resumee"])
    assert "usage: soundvcm train" in capsys.readouterr().err


def test_benchmark_measurements_keep_native_noise_out(capfd):
    from soundvcm.bench.measure import peak_memory_mb

    peak_memory_mb(lambda: torch.ones(256, 256) @ torch.ones(256, 256))
    captured = capfd.readouterr()
    assert "profiler_start" not in captured.err and "CPUAllocator" not in captured.err


def _tsv(d: Path, text: str) -> Path:
    (d / "list.tsv").write_text(text)
    return d / "list.tsv"


def _not_a_model(d: Path, kind: str) -> list:
    """``generate`` with a video and a --model that is not a soundvcm model (issue 24)."""
    import json

    from media_factory import make_video
    from soundvcm.data.cache import CacheMeta

    video = make_video(d / "clip.mp4", duration=1.0)
    if kind == "json":  # some JSON and an empty weights file
        (d / "fake.json").write_text(json.dumps({"name": "not a model"}))
        (d / "fake.safetensors").write_bytes(b"")
        return ["generate", video, "--model", d / "fake", "--out", d / "o"]
    if kind == "weights":  # a real model's JSON beside another file's bytes
        assert main(["model", "init", "--preset", "debug", "--encoders", "lite", "--out", str(d / "m")]) == 0
        (d / "m.safetensors").write_bytes(b"\x00" * 64)
        return ["generate", video, "--model", d / "m", "--out", d / "o"]
    CacheMeta("lite", 22050, 8.0, 25.0, 4.0, [173, 160], [32, 1280], [88, 128], [77, 384], True, 4, 64).save(d)
    return ["generate", video, "--model", d / "meta", "--out", d / "o"]


USER_ERRORS = {
    "generate_image_and_video": (
        lambda d: ["generate", "clip.mp4", "--image", d / "still.png", "--out", d / "o"],
        "give either VIDEO or --image, not both",
    ),
    "generate_model_is_other_json": (lambda d: _not_a_model(d, "json"), "fake.json: not a soundvcm model"),
    "generate_model_weights_are_another_file": (lambda d: _not_a_model(d, "weights"), "m.safetensors: unreadable"),
    "generate_model_is_a_cache_meta": (lambda d: _not_a_model(d, "meta"), "meta.json: not a soundvcm model (a feature"),
    # name: (argv builder, message on the one stderr line)
    "model_preset": (
        lambda d: ["model", "init", "--preset", "lites", "--out", d / "m"],
        "unknown network preset 'lites'",
    ),
    "model_objective": (
        lambda d: ["model", "init", "--preset", "debug", "--objective", "vmc", "--out", d / "m"],
        "unknown objective 'vmc'",
    ),
    "model_encoders": (
        lambda d: ["model", "init", "--preset", "lite", "--encoders", "clap", "--out", d / "m"],
        "unknown encoder set 'clap'",
    ),
    "extract_no_tsv": (lambda d: ["extract", "--input", d / "none.tsv", "--out", d / "c"], "no such TSV file"),
    "extract_empty_tsv": (lambda d: ["extract", "--input", _tsv(d, "\n"), "--out", d / "c"], "no rows"),
    "extract_encoders": (
        lambda d: ["extract", "--input", _tsv(d, "a.wav\tx\n"), "--out", d / "c", "--encoders", "clap"],
        "unknown encoder set 'clap'",
    ),
    "extract_shard_size": (
        lambda d: ["extract", "--input", _tsv(d, "a.wav\tx\n"), "--out", d / "c", "--rows-per-shard", "0"],
        "--rows-per-shard must be >= 1",
    ),
    "train_no_cache": (lambda d: ["train", "--data", d / "none", "--out", d / "run"], "not a feature cache"),
    "train_weight": (lambda d: ["train", "--data", f"{d}:heavy", "--out", d / "run"], "must be a number"),
    "train_allow_changes": (
        lambda d: ["train", "--data", d, "--out", d / "run", "--allow-changes"],
        "--allow-changes only goes with --resume",
    ),
    "ema_no_run": (lambda d: ["ema", d / "none"], "no training checkpoint"),
    "evaluate_no_pred": (lambda d: ["evaluate", "--pred", d / "none", "--gt", d], "none"),
    "convert_missing": (lambda d: ["convert", "mmaudio", d / "none.pth", d / "out"], "no such file"),
    "weights_unknown": (lambda d: ["weights", "download", "clip_vit_b"], "clip_vit_b"),
    "weights_verify_missing": (lambda d: ["weights", "verify", "vggish", "--dir", d], "not found"),
    "data_open_part": (lambda d: ["data", "open", d / "o", "--parts", "foley,vggsound"], "unknown part(s) vggsound"),
    "data_open_count": (lambda d: ["data", "open", d / "o", "--foley-test", "-1"], "--foley-test must be >= 0"),
    "quality_no_data": (lambda d: ["bench", "quality", "--data", d / "none"], "soundvcm data open"),
    "quality_bad_row": (lambda d: ["bench", "quality", "--data", d, "--row", "x=m:heun"], "sampler must be"),
    "quality_set": (lambda d: ["bench", "quality", "--data", d, "--sets", "audiocaps"], "unknown test set"),
    "model_ship_missing": (lambda d: ["model", "ship", d / "none", "--name", "x"], "not found"),
    "vocoder_min_peak": (
        lambda d: ["vocoder", "distill", "--data", d, "--out", d / "v", "--min-peak", "0"],
        "--min-peak must be in (0, 0.95]",
    ),
    "vocoder_init_and_prune": (
        lambda d: ["vocoder", "distill", "--data", d, "--out", d / "v", "--init", d / "s", "--prune"],
        "give one",
    ),
    "vocoder_prune_istft": (
        lambda d: ["vocoder", "distill", "--data", d, "--out", d / "v", "--student", "istft", "--prune"],
        "needs --student hifigan",
    ),
    "vocoder_istft_hop": (
        lambda d: ["vocoder", "distill", "--data", d, "--out", d / "v", "--student", "istft", "--hop", "96"],
        "hop must divide",
    ),
    "vocoder_adversarial_hifigan": (
        lambda d: ["vocoder", "distill", "--data", d, "--out", d / "v", "--adversarial", "1"],
        "--adversarial is for --student trunk",
    ),
}


@pytest.mark.parametrize("name", list(USER_ERRORS))
def test_user_errors_end_in_one_line_and_exit_2(name, tmp_path, capsys):
    build, message = USER_ERRORS[name]
    code, _, err = _run(build(tmp_path), capsys)
    lines = [ln for ln in re.split(r"[\r\n]", err) if ln.strip()]
    assert code == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("soundvcm: error:") and message in lines[0], lines


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "clip.mp4", "--duration", "nan"],
        ["generate", "clip.mp4", "--start", "inf"],
        ["generate", "clip.mp4", "--overlap", "NaN"],
        ["generate", "clip.mp4", "--cfg=-inf"],
        ["generate", "clip.mp4", "--negative-scale", "nan"],
        ["bench", "quality", "--data", "d", "--duration", "nan"],
        ["demo", "--max-seconds", "inf"],
    ],
)
def test_non_finite_numbers_are_refused_naming_the_option(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    option = argv[-1].split("=")[0] if "=" in argv[-1] else argv[-2]
    assert exc.value.code == 2 and "Traceback" not in err
    assert f"argument {option}: must be" in err and ("finite" in err or "> 0" in err), err


def test_bench_train_runs_on_its_default_device(capsys):
    """``bench train`` with ``--device`` left at ``auto`` (it once handed "auto" to torch.device and
    failed): a timed step per objective, on the device that auto picked, named in the table."""
    code = main(["bench", "train", "--preset", "debug", "--batch", "2", "--timed-steps", "1", "--objectives", "fm,vcm"])
    out = capsys.readouterr().out
    assert code == 0
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert f"## Training step, debug, batch 2, {expected}," in out
    assert re.search(r"^\| vcm \| \d+\.\d\d \| .* \| \d+\.\d\dx \|", out, re.M)
