"""The weight registry: every downloadable file, gathered from the modules that declare them.

Each model module declares its own :class:`~soundvcm.weights.WeightFile` (URL, md5, expected
keys); this module only collects them by name for ``soundvcm weights list|download|verify`` and
for loading MMAudio networks by name.
"""

from __future__ import annotations

from pathlib import Path

from soundvcm.encoders.bigvgan import BIGVGAN_WEIGHTS
from soundvcm.encoders.clip import CLIP_WEIGHTS
from soundvcm.encoders.clip_tokenizer import CLIP_BPE
from soundvcm.encoders.mel_vae import VAE_WEIGHTS
from soundvcm.encoders.mmaudio_set import EMPTY_STRING
from soundvcm.evaluation.imagebind import IMAGEBIND_WEIGHTS
from soundvcm.evaluation.panns import PANNS_WEIGHTS
from soundvcm.evaluation.passt import PASST_WEIGHTS
from soundvcm.evaluation.synchformer import SYNCHFORMER_WEIGHTS
from soundvcm.evaluation.vggish import VGGISH_WEIGHTS
from soundvcm.network.checkpoint import MMAUDIO_NETWORKS
from soundvcm.weights import WeightFile, WeightsError
from soundvcm.weights import check_keys as _check_keys
from soundvcm.weights import download as _download
from soundvcm.weights import expected_keys as _expected_keys
from soundvcm.weights import resolve as _resolve

REGISTRY: dict[str, WeightFile] = {
    w.name: w
    for w in [
        *MMAUDIO_NETWORKS.values(),
        *VAE_WEIGHTS.values(),
        *BIGVGAN_WEIGHTS.values(),
        SYNCHFORMER_WEIGHTS,
        CLIP_WEIGHTS,
        CLIP_BPE,
        PANNS_WEIGHTS,
        VGGISH_WEIGHTS,
        PASST_WEIGHTS,
        IMAGEBIND_WEIGHTS,
        EMPTY_STRING,
    ]
}


def entry(name: str) -> WeightFile:
    if name not in REGISTRY:
        raise WeightsError(f"unknown weights '{name}'; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def resolve(name: str, directory: Path | None = None, check_md5: bool = True) -> Path:
    return _resolve(entry(name), directory, check_md5)


def download(name: str, directory: Path | None = None, force: bool = False) -> Path:
    return _download(entry(name), directory, force)


def expected_keys(name: str) -> dict[str, tuple[int, ...]] | None:
    return _expected_keys(entry(name))


def check_keys(name: str, state: dict) -> None:
    _check_keys(entry(name), state)
