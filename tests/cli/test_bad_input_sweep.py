"""The last holes of issue 34's sweep: each case ends in one line on stderr and exit status 2, or in
correct output; never a traceback, never a half-written or foreign file.

Cases that need what a root user bypasses (a folder or file without permissions) run the command
as ``nobody`` through ``setpriv`` when the tests run as root, and as the user itself otherwise."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from media_factory import make_video
from soundvcm.cli import main
from soundvcm.generate import Job, claim_outputs

PYTHON = Path(sys.executable)


def _lines(err: str) -> list[str]:
    """stderr's lines, less warnings (a debug model says once that it was never trained)."""
    return [ln for ln in re.split(r"[\r\n]", err) if ln.strip() and not ln.startswith("soundvcm: warning:")]


def _one_line(code: int, err: str, message: str) -> None:
    lines = _lines(err)
    assert code == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("soundvcm: error:") and message in lines[0], lines


def _cli(argv, capsys) -> tuple[int, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's own exits
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def debug_model(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("model")
    assert main(["model", "init", "--preset", "debug", "--encoders", "lite2", "--out", str(d / "dbg")]) == 0
    return d / "dbg"


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("clip") / "clip.mp4", duration=1.0)


# ----- item 3 and item 6: values refused when the command line is read -----------------------------
BAD_VALUES = {
    "device": (["generate", "clip.mp4", "--device", "nosuch"], "unknown device 'nosuch'"),
    "train_device": (["train", "--data", "d", "--out", "r", "--device", "nosuch"], "unknown device 'nosuch'"),
    "extract_device": (["extract", "--input", "x.tsv", "--out", "c", "--device", "gpu"], "unknown device 'gpu'"),
    "cuda_index": (["generate", "clip.mp4", "--device", "cuda:one"], "unknown device 'cuda:one'"),
    "huge_seed": (["generate", "clip.mp4", "--seed", "99999999999999999999999"], "from 0 to 2^63 - 1"),
    "negative_seed": (["generate", "clip.mp4", "--seed", "-1"], "from 0 to 2^63 - 1"),
    "huge_steps": (["generate", "clip.mp4", "--steps", "100000000000"], "must be at most 1000"),
    "float_steps": (["generate", "clip.mp4", "--steps", "1e11"], "expected a whole number"),
}


@pytest.mark.parametrize("name", list(BAD_VALUES))
def test_bad_values_are_one_line_naming_the_option(name, capsys):
    argv, message = BAD_VALUES[name]
    code, err = _cli(argv, capsys)
    _one_line(code, err, message)


def test_a_duration_shorter_than_any_clip_says_so(clip, debug_model, tmp_path, capsys):
    code, err = _cli(["generate", clip, "--model", debug_model, "--duration", "1e-9", "--out", tmp_path / "o"], capsys)
    _one_line(code, err, "--duration 1e-09 is shorter than the shortest clip")
    assert "ends before" not in err and not (tmp_path / "o").exists()


# ----- item 2: a full disk --------------------------------------------------------------------------
@pytest.fixture
def full_disk(tmp_path):
    """A 64 KB tmpfs (root only: mounting needs it)."""
    target = tmp_path / "full"
    target.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(target)], capture_output=True).returncode:
        pytest.skip("mount -t tmpfs refused here")
    yield target
    subprocess.run(["umount", str(target)], check=False)


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_full_disk_is_one_line_and_leaves_nothing(full_disk, clip, debug_model, capsys, overwrite):
    argv = ["generate", clip, "--model", debug_model, "--duration", "1", "--out", full_disk]
    code, err = _cli(argv + (["--overwrite"] if overwrite else []), capsys)
    _one_line(code, err, "could not be written")
    assert list(full_disk.iterdir()) == []  # no temporary, no claim, no half-written output


# ----- item 4: two runs aimed at the same outputs ---------------------------------------------------
def _holder(out: Path, name: str) -> subprocess.Popen:
    """Another process holding the claim on OUT/NAME.* until it is killed."""
    code = (
        "import sys, time; from pathlib import Path; from soundvcm.generate import Job, claim_outputs\n"
        f"with claim_outputs([Job({name!r})], Path({str(out)!r})):\n"
        "    print('held', flush=True); time.sleep(600)\n"
    )
    proc = subprocess.Popen([PYTHON, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_second_run_on_claimed_outputs_is_refused(clip, debug_model, tmp_path, capsys, overwrite):
    out = tmp_path / "out"
    holder = _holder(out, "clip")
    try:
        argv = ["generate", clip, "--model", debug_model, "--duration", "1", "--out", out]
        code, err = _cli(argv + (["--overwrite"] if overwrite else []), capsys)
        _one_line(code, err, f"another soundvcm run (host and pid: {os.uname().nodename} {holder.pid})")
        assert sorted(p.name for p in out.iterdir()) == [".clip.claim"]  # nothing of ours
    finally:
        holder.send_signal(signal.SIGKILL)  # a killed holder: its claim lapses with it
        holder.wait()
    assert _cli(argv, capsys)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["clip.flac", "clip.mp4"]  # and the claim is gone


def test_claims_are_exclusive_and_released(tmp_path):
    out = tmp_path / "o"
    with claim_outputs([Job("a"), Job("b")], out):
        with (
            pytest.raises(ValueError, match=r"o/b\.\*: another soundvcm run"),
            claim_outputs([Job("c"), Job("b")], out),
        ):
            pass
        assert not (out / ".c.claim").exists()  # what the refused run took is released
        assert sorted(p.name for p in out.iterdir()) == [".a.claim", ".b.claim"]
    assert not out.exists()  # the folder was made for the claims: nothing else in it, so removed
    with claim_outputs([Job("a")], tmp_path / "new"):
        pass
    assert not (tmp_path / "new").exists()  # a folder made only for claims is removed again


def test_two_concurrent_runs_one_writes_the_other_is_refused(clip, debug_model, tmp_path):
    out = tmp_path / "out"
    argv = [PYTHON, "-m", "soundvcm.cli", "generate", str(clip), "--model", str(debug_model), "--duration", "1"]
    runs = [
        subprocess.Popen(argv + ["--out", str(out), "--seed", str(s)], stderr=subprocess.PIPE, text=True)
        for s in (1, 2)
    ]
    results = [(r.wait(timeout=300), r.stderr.read() if r.stderr else "") for r in runs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results  # never both: one would replace the other's outputs
    loser = next(err for code, err in results if code == 2)
    # overlapping runs meet the claim; a run that starts after the other finished meets its outputs
    assert "another soundvcm run" in loser or "already exist" in loser, loser
    assert sorted(p.name for p in out.iterdir()) == ["clip.flac", "clip.mp4"]


# ----- item 6: folders and files a user may not touch ------------------------------------------------
def _as_nobody(argv: list[str], home: Path) -> subprocess.CompletedProcess:
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot drop privileges")
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}
    return subprocess.run(prefix + [str(PYTHON), "-m", "soundvcm.cli", *argv], capture_output=True, text=True, env=env)


@pytest.fixture
def open_tree() -> Iterator[Path]:
    """A folder everyone may enter and read, outside pytest's own (private to its user)."""
    tree = Path(tempfile.mkdtemp(prefix="soundvcm-sweep-"))
    tree.chmod(0o755)
    home = tree / "home"
    home.mkdir()
    home.chmod(0o777)
    yield tree
    for p in tree.rglob("*"):  # let root's cleanup enter what the test locked
        if p.is_dir():
            p.chmod(0o755)
    shutil.rmtree(tree, ignore_errors=True)


def _readable_copy(path: Path, folder: Path) -> Path:
    copy = Path(shutil.copy(path, folder / path.name))
    copy.chmod(0o644)
    return copy


def test_a_read_only_output_folder_is_refused_before_any_model_work(open_tree, clip):
    video = _readable_copy(clip, open_tree)
    locked = open_tree / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    # a model that does not exist: the folder is refused before the model is even looked up
    run = _as_nobody(
        ["generate", str(video), "--model", str(open_tree / "none"), "--out", str(locked)], open_tree / "home"
    )
    _one_line(run.returncode, run.stderr, f"{locked}: the output folder is not writable")
    run = _as_nobody(["generate", str(video), "--out", str(locked / "sub")], open_tree / "home")
    _one_line(run.returncode, run.stderr, "the output folder cannot be created (Permission denied)")


def test_an_unreadable_model_file_says_permission_denied(open_tree, clip, debug_model):
    video = _readable_copy(clip, open_tree)
    for suffix in (".json", ".safetensors"):
        shutil.copy(debug_model.with_suffix(suffix), open_tree / f"m{suffix}")
        (open_tree / f"m{suffix}").chmod(0o644)
    (open_tree / "m.safetensors").chmod(0o600)
    argv = ["generate", str(video), "--model", str(open_tree / "m"), "--out", str(open_tree / "home" / "o")]
    run = _as_nobody(argv, open_tree / "home")
    _one_line(run.returncode, run.stderr, "m.safetensors: checkpoint weights cannot be read: permission denied")
    assert "No such file" not in run.stderr
    (open_tree / "m.json").chmod(0o600)
    run = _as_nobody(argv, open_tree / "home")
    _one_line(run.returncode, run.stderr, "m.json: checkpoint config cannot be read: permission denied")


def test_a_killed_run_does_not_block_the_next(clip, debug_model, tmp_path, capsys):
    out = tmp_path / "out"
    holder = _holder(out, "clip")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    time.sleep(0.05)
    assert _cli(["generate", clip, "--model", debug_model, "--duration", "1", "--out", out], capsys)[0] == 0


# ----- item 6: memory of a long --full run -------------------------------------------------------------
@pytest.mark.slow
def test_bench_long_records_peak_memory_flat_over_the_windows(debug_model, capsys):
    """The bench on a debug model: 12 s (3 windows) against 48 s (12 windows), each in a fresh process.
    The full-size figures (1 and 10 minutes with the shipped model) are in BENCHMARKS.md."""
    from soundvcm.bench.long import run_long, table

    runs = run_long([0.2, 0.8], str(debug_model), ("--duration", "4"))
    assert [r.minutes for r in runs] == [0.2, 0.8] and all(r.peak_mb > 50 for r in runs)
    assert runs[1].peak_mb <= 1.2 * runs[0].peak_mb, table(runs)  # four times the windows, not four times the memory
    assert list(runs[1].profile_mb) == sorted(runs[1].profile_mb) and runs[1].profile_mb[-1] == runs[1].peak_mb
    assert "| 0.8 min |" in table(runs)
