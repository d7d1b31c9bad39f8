"""Helpers for the MMAudio reference fixtures (see tests/fixtures/README.md)."""

import json
import zlib
from pathlib import Path

import torch
from safetensors import safe_open

from soundvcm.precision import cpu_model

FIXTURES = Path(__file__).parent / "fixtures"


def rule_weight(key, shape, seed):
    """The deterministic weights the fixtures were made with."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(key.encode()))
    x = torch.randn(tuple(shape), generator=g, dtype=torch.float32)
    return x.abs() * 0.5 + 0.5 if key == "latent_std" else x * 0.05


def fixture_check(actual, expected, meta, record=None, rtol=1e-5, atol=1e-5) -> str:
    """Compare ``actual`` to a stored fixture's ``expected``: bit for bit where this machine is the
    one kind the fixture was made on (its recorded ``cpu_model``, ``cpu_capability`` and ``threads``),
    since float sums in the CPU kernels depend on all three; within ``rtol``/``atol`` elsewhere.
    Capability and threads alone are not enough: two machines both reporting AVX512 gave results
    1 ulp apart at 2 threads (2.7714e-02 vs 2.7715e-02). A fixture without a recorded model is never
    compared bitwise. Returns (and, through pytest's ``record_property``, reports)
    which check ran."""
    made = (meta.get("cpu_model"), meta.get("cpu_capability"), meta.get("threads"))
    here = (cpu_model(), str(torch.backends.cpu.get_cpu_capability()), str(torch.get_num_threads()))
    if made == here:
        assert torch.equal(actual, expected), "bitwise mismatch on the fixture's own CPU and thread count"
        kind = f"bitwise ({here[0]}, {here[1]}, {here[2]} threads: the fixture's machine)"
    else:
        torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)
        kind = f"rtol {rtol:g} / atol {atol:g} (fixture made on {made[0] or 'an unrecorded CPU'}, {made[1]}, "
        kind += f"{made[2]} threads; here {here[0]}, {here[1]}, {here[2]} threads)"
    print(f"fixture check: {kind}")
    if record is not None:
        record("fixture_check", kind)
    return kind


def load_fixture(name):
    """(metadata, tensors) of a fixture file."""
    with safe_open(str(FIXTURES / name), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    return meta, tensors


def mmaudio_pth(tmp_path, version: str):
    """A tiny MMAudio .pth (the fixture's keys, weights by rule) and the fixture's reference tensors."""
    meta, data = load_fixture(f"mmaudio_tiny_{version}.safetensors")
    keys = json.loads(meta["keys"])
    state = {k: rule_weight(k, v, int(meta["seed"])) for k, v in keys.items()}
    path = tmp_path / f"mmaudio_{version}.pth"
    torch.save(state, path)
    return path, data
