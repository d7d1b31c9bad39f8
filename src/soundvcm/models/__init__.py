"""Models that ship inside the package: ``NAME.safetensors`` (fp16) + ``NAME.json`` per model, and
``SHIPPED.json`` with each file's md5, so that a damaged or missing file is named, with the
command that restores it, instead of failing deep inside the loader.

``soundvcm model ship CHECKPOINT --name NAME`` writes a model here (weights cast to fp16: the
network runs in fp32, the cast only halves the file); ``Pipeline.load(NAME)`` and ``soundvcm
generate --model NAME`` find it; ``soundvcm generate`` without ``--model`` uses ``default``.
"""

from __future__ import annotations

import json
from pathlib import Path

from soundvcm.atomic import atomic_write, md5sum

SHIPPED_DIR = Path(__file__).resolve().parent
DEFAULT = "default"
RESTORE = (
    "restore it with `pip install --force-reinstall --no-deps soundvcm` (in a git checkout: "
    "`git checkout -- src/soundvcm/models`), or rebuild the weights with the recipe in docs/MODEL_CARD.md"
)


def manifest() -> dict[str, dict]:
    path = SHIPPED_DIR / "SHIPPED.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def shipped_names() -> list[str]:
    return sorted(manifest())


def is_shipped(name: str | Path) -> bool:
    return str(name) in manifest() and not Path(name).exists()


def resolve_shipped(name: str, check: bool = True) -> Path:
    """The checkpoint path (``.../models/NAME``) of a shipped model, its files checked by md5."""
    entry = manifest().get(name)
    if entry is None:
        raise FileNotFoundError(f"no shipped model named {name!r}; shipped: {', '.join(shipped_names()) or 'none'}")
    for filename, md5 in entry["md5"].items():
        path = SHIPPED_DIR / filename
        if not path.is_file():
            raise FileNotFoundError(f"shipped model {name!r}: {path} is missing; {RESTORE}")
        if check and md5sum(path) != md5:
            raise ValueError(f"shipped model {name!r}: {path} is damaged (md5 differs); {RESTORE}")
    return SHIPPED_DIR / name


def ship(checkpoint: str | Path, name: str, description: str = "", folder: Path | None = None) -> Path:
    """Copy a soundvcm checkpoint here with fp16 weights and record its md5s."""
    from safetensors.torch import load_file

    from soundvcm.atomic import save_tensors
    from soundvcm.network.checkpoint import checkpoint_paths

    folder = folder or SHIPPED_DIR
    weights, config = checkpoint_paths(checkpoint)
    if not (weights.is_file() and config.is_file()):
        raise FileNotFoundError(
            f"{checkpoint}: checkpoint not found (a soundvcm checkpoint is NAME.json + NAME.safetensors)"
        )
    state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in load_file(str(weights)).items()}
    doc = json.loads(config.read_text())
    if "spec" not in doc:  # a checkpoint from before specs: infer it once, here
        from soundvcm.spec import legacy_spec

        doc["spec"] = legacy_spec(doc).to_dict()
    doc["shipped"] = {"name": name, "dtype": "float16", "description": description, "from": str(weights.name)}
    save_tensors(folder / f"{name}.safetensors", state)
    atomic_write(folder / f"{name}.json", lambda tmp: tmp.write_text(json.dumps(doc, indent=1)))
    path = folder / "SHIPPED.json"
    entries = json.loads(path.read_text()) if path.is_file() else {}
    entries[name] = {
        "description": description,
        "md5": {
            f"{name}.safetensors": md5sum(folder / f"{name}.safetensors"),
            f"{name}.json": md5sum(folder / f"{name}.json"),
        },
        "parameters": int(sum(v.numel() for v in state.values() if v.is_floating_point())),
    }
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(entries, indent=1, sort_keys=True)))
    return folder / name


__all__ = ["DEFAULT", "RESTORE", "SHIPPED_DIR", "is_shipped", "manifest", "resolve_shipped", "ship", "shipped_names"]
