"""Loading models by name: a local path, a shipped model, or a hub id ``org/name[@revision]``.

Hub ids resolve through ``huggingface_hub``'s cache (an optional package; ``pip install
huggingface_hub``) and honour its offline mode (``HF_HUB_OFFLINE=1``): a cached snapshot loads
with no network, and an id that is not cached while offline is one line naming the id and how to
fetch it. A hub repository is a soundvcm checkpoint folder as :func:`package` writes it:
``model.safetensors`` + ``model.json`` (with the run's spec) + ``README.md`` (the model card),
pushed as-is (``huggingface-cli upload org/name FOLDER``).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from soundvcm import models
from soundvcm.atomic import atomic_write
from soundvcm.network.checkpoint import checkpoint_paths, read_checkpoint_config
from soundvcm.spec import read_spec

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


def is_hub_id(name: str | Path) -> bool:
    """``org/name[@rev]`` that is not an existing local path."""
    return bool(HUB_ID.match(str(name))) and not Path(name).exists() and not Path(str(name) + ".json").exists()


def resolve_hub(hub_id: str) -> Path:
    """The local checkpoint path (``.../model``) of a hub id, from huggingface_hub's cache."""
    repo, _, revision = hub_id.partition("@")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:
        raise ValueError(f"{hub_id}: loading hub ids needs huggingface_hub (pip install huggingface_hub)") from None
    try:
        folder = Path(
            snapshot_download(repo, revision=revision or None, allow_patterns=["*.json", "*.safetensors", "*.md"])
        )
    except LocalEntryNotFoundError:
        raise ValueError(
            f"{hub_id}: no local checkpoint by that name, and not in the local hub cache while offline; fetch it with "
            f"`huggingface-cli download {repo}{' --revision ' + revision if revision else ''}` on a connected "
            "machine (or unset HF_HUB_OFFLINE)"
        ) from None
    except Exception as exc:  # network errors, missing repositories, bad revisions
        raise ValueError(f"{hub_id}: could not fetch it from the hub ({exc.__class__.__name__}: {exc})") from None
    return checkpoint_in(folder, hub_id)


def checkpoint_in(folder: Path, what: str) -> Path:
    """The one checkpoint (NAME.json + NAME.safetensors) in a folder; ``model`` wins if several."""
    stems = sorted(p.with_suffix("") for p in folder.glob("*.json") if p.with_suffix(".safetensors").is_file())
    if folder / "model" in stems:
        return folder / "model"
    if len(stems) != 1:
        found = ", ".join(p.name for p in stems) or "none"
        raise ValueError(f"{what}: expected one checkpoint (model.json + model.safetensors) in {folder}; found {found}")
    return stems[0]


def resolve_model(name: str | Path) -> Path:
    """A shipped model's name, a hub id or a local checkpoint path -> the local checkpoint path."""
    if models.is_shipped(name):
        return models.resolve_shipped(str(name))
    if is_hub_id(name):
        return resolve_hub(str(name))
    return Path(name)


def package(checkpoint: str | Path, out: Path) -> Path:
    """A folder to push as-is: model.safetensors + model.json + README.md (a model card from the spec)."""
    weights, config = checkpoint_paths(resolve_model(checkpoint))
    if not (weights.is_file() and config.is_file()):
        raise FileNotFoundError(f"{checkpoint}: checkpoint not found (NAME.json + NAME.safetensors)")
    doc, spec = read_checkpoint_config(config), read_spec(config)
    if "spec" not in doc:  # written once, here, for checkpoints from before specs
        doc["spec"] = spec.to_dict()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "model.safetensors", lambda tmp: shutil.copyfile(weights, tmp))
    atomic_write(out / "model.json", lambda tmp: tmp.write_text(json.dumps(doc, indent=1)))
    seconds = spec.duration if spec.duration is not None else "?"
    card = f"""---
library_name: soundvcm
tags: [video-to-audio, text-to-audio, soundvcm]
---
# {out.name}

A soundvcm checkpoint: network `{spec.network}`, encoder set `{spec.encoder_set}`, objective `{spec.objective}`,
{seconds} s clips. Default sampler: {spec.sampler.kind}, {spec.sampler.steps} step(s).

    soundvcm generate clip.mp4 --model ORG/{out.name}

Provenance: `{json.dumps(doc.get("provenance", {}))}`
"""
    atomic_write(out / "README.md", lambda tmp: tmp.write_text(card))
    return out
