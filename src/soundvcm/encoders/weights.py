"""The weight registry: every official file with its URL and md5, plus download and verification.

Files live in ``$SOUNDVCM_WEIGHTS`` (default ``~/.cache/soundvcm/weights``). ``soundvcm weights
download NAME...`` fetches them with a progress bar, checks the md5 and renames into place only
when it matches, so an interrupted download never looks complete. When a file is missing or
fails its checksum, :func:`resolve` raises an error that names the file and the command that
fetches it. The lite encoder set needs none of these: its weights come from pip packages.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from soundvcm.encoders.base import WeightsError

RELEASES = "https://github.com/hkchengrex/MMAudio/releases/download/v0.1"
HF_MMAUDIO = "https://huggingface.co/hkchengrex/MMAudio/resolve/main/weights"


@dataclass(frozen=True)
class WeightFile:
    name: str
    filename: str
    url: str
    md5: str | None  # None: upstream publishes no checksum; the strict key check still applies
    description: str
    sha256_prefix: str | None = None  # torch.hub-style names carry the first hex digits of the SHA-256


REGISTRY: dict[str, WeightFile] = {
    w.name: w
    for w in [
        WeightFile(
            "mmaudio_small_16k", "mmaudio_small_16k.pth", f"{HF_MMAUDIO}/mmaudio_small_16k.pth",
            "af93cde404179f58e3919ac085b8033b", "MMAudio network, small, 16 kHz"),
        WeightFile(
            "mmaudio_small_44k", "mmaudio_small_44k.pth", f"{HF_MMAUDIO}/mmaudio_small_44k.pth",
            "babd74c884783d13701ea2820a5f5b6d", "MMAudio network, small, 44.1 kHz"),
        WeightFile(
            "mmaudio_medium_44k", "mmaudio_medium_44k.pth", f"{HF_MMAUDIO}/mmaudio_medium_44k.pth",
            "5a56b6665e45a1e65ada534defa903d0", "MMAudio network, medium, 44.1 kHz"),
        WeightFile(
            "mmaudio_large_44k", "mmaudio_large_44k.pth", f"{HF_MMAUDIO}/mmaudio_large_44k.pth",
            "fed96c325a6785b85ce75ae1aafd2673", "MMAudio network, large, 44.1 kHz"),
        WeightFile(
            "mmaudio_large_44k_v2", "mmaudio_large_44k_v2.pth", f"{HF_MMAUDIO}/mmaudio_large_44k_v2.pth",
            "01ad4464f049b2d7efdaa4c1a59b8dfe", "MMAudio network, large v2, 44.1 kHz"),
        WeightFile(
            "vae_16k", "v1-16.pth", f"{RELEASES}/v1-16.pth",
            "69f56803f59a549a1a507c93859fd4d7", "1-D mel VAE, 16 kHz (80 mels -> 20 channels)"),
        WeightFile(
            "vae_44k", "v1-44.pth", f"{RELEASES}/v1-44.pth",
            "fab020275fa44c6589820ce025191600", "1-D mel VAE, 44.1 kHz (128 mels -> 40 channels)"),
        WeightFile(
            "bigvgan_16k", "best_netG.pt", f"{RELEASES}/best_netG.pt",
            "eeaf372a38a9c31c362120aba2dde292", "BigVGAN vocoder, 16 kHz (Make-An-Audio 2)"),
        WeightFile(
            "bigvgan_v2_44k", "bigvgan_v2_44khz_128band_512x.pt",
            "https://huggingface.co/nvidia/bigvgan_v2_44khz_128band_512x/resolve/main/bigvgan_generator.pt",
            None, "BigVGAN v2 vocoder, 44.1 kHz, 128 bands"),
        WeightFile(
            "synchformer", "synchformer_state_dict.pth", f"{RELEASES}/synchformer_state_dict.pth",
            "5b2f5594b0730f70e41e549b7c94390c", "Synchformer (its MotionFormer visual extractor is used)"),
        WeightFile(
            "clip_dfn5b", "DFN5B-CLIP-ViT-H-14-384.bin",
            "https://huggingface.co/apple/DFN5B-CLIP-ViT-H-14-384/resolve/main/open_clip_pytorch_model.bin",
            None, "CLIP DFN5B ViT-H-14 at 384 px (image and text)"),
        WeightFile(
            "clip_bpe", "bpe_simple_vocab_16e6.txt.gz",
            "https://github.com/mlfoundations/open_clip/raw/v3.3.0/src/open_clip/bpe_simple_vocab_16e6.txt.gz",
            "933b7abbbbde62c36f02f0e6ccde464f", "CLIP's BPE merges (text tokenizer)"),
        WeightFile(
            "panns_cnn14_16k", "Cnn14_16k_mAP=0.438.pth",
            "https://zenodo.org/record/3987831/files/Cnn14_16k_mAP%3D0.438.pth",
            None, "PANNs Cnn14, 16 kHz (FD-PANN, KL-PANNS-softmax, ISC-PANNS)"),
        WeightFile(
            "vggish", "vggish-10086976.pth",
            "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth",
            None, "VGGish (FD-VGG)", sha256_prefix="10086976"),
        WeightFile(
            "passt", "passt-s-f128-p16-s10-ap.476-swa.pt",
            "https://github.com/kkoutini/PaSST/releases/download/v0.0.1-audioset/passt-s-f128-p16-s10-ap.476-swa.pt",
            None, "PaSST-S, 32 kHz, 10 s (FD-PASST, KL-PASST-softmax)"),
        WeightFile(
            "imagebind_huge", "imagebind_huge.pth", "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth",
            None, "ImageBind-Huge (IB-Score; its vision and audio parts are used)"),
        WeightFile(
            "empty_string", "empty_string.pth", f"{RELEASES}/empty_string.pth",
            None, "CLIP text features of the empty string (MMAudio's frozen null text)"),
    ]
}  # fmt: skip


def expected_keys(name: str) -> dict[str, tuple[int, ...]] | None:
    """The state-dict keys and shapes a registered file must hold (what strict loading needs),
    from our own modules built on the meta device; None for files that are not state dicts."""
    import torch

    def shapes(module, prefix: str = "") -> dict[str, tuple[int, ...]]:
        return {prefix + k: tuple(v.shape) for k, v in module.state_dict().items()}

    with torch.device("meta"):
        if name == "clip_dfn5b":
            from soundvcm.encoders.clip import CLIP

            return shapes(CLIP())
        if name == "synchformer":  # the whole model (DeSync); the encoder set uses its vfeat_extractor
            from soundvcm.evaluation.synchformer import Synchformer

            return shapes(Synchformer())
        if name in ("vae_16k", "vae_44k"):
            from soundvcm.encoders.mel_vae import MelVAE

            return shapes(MelVAE.from_config(name.split("_")[1]))
        if name in ("bigvgan_16k", "bigvgan_v2_44k"):
            from soundvcm.encoders.bigvgan import BIGVGAN_CONFIGS, BigVGAN

            return shapes(BigVGAN(BIGVGAN_CONFIGS["16k" if name == "bigvgan_16k" else "44k"]))
        if name == "panns_cnn14_16k":
            from soundvcm.evaluation.panns import Cnn14

            return shapes(Cnn14())
        if name == "vggish":
            from soundvcm.evaluation.vggish import VGGish

            return shapes(VGGish())
        if name == "imagebind_huge":
            from soundvcm.evaluation.imagebind import ImageBind

            return shapes(ImageBind())
        if name == "passt":
            from soundvcm.evaluation.passt import PaSST

            return shapes(PaSST())
        if name.startswith("mmaudio_"):
            from soundvcm.network.mmdit import MMDiT, network_preset

            net = MMDiT(network_preset(name.removeprefix("mmaudio_"), offset_embedding=False))
            return shapes(net)
    return None


def check_keys(name: str, state: dict) -> None:
    """Raise WeightsError unless ``state`` (weight norm folded) has exactly the expected keys and shapes."""
    from soundvcm.encoders.base import fold_weight_norm

    expected = expected_keys(name)
    if expected is None:
        return
    for wrapper in ("generator", "model"):
        if isinstance(state, dict) and wrapper in state and isinstance(state[wrapper], dict):
            state = state[wrapper]
    if name == "vggish":
        state = {k: v for k, v in state.items() if not k.startswith("pproc.")}
    got = {k: tuple(v.shape) for k, v in fold_weight_norm(state).items()}
    if name == "imagebind_huge":  # the file holds six modalities; we use vision and audio
        from soundvcm.evaluation.imagebind import OTHER_MODALITIES

        got = {k: v for k, v in got.items() if not (len(k.split(".")) > 1 and k.split(".")[1] in OTHER_MODALITIES)}
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
    if missing or extra or wrong:
        raise WeightsError(
            f"{name}: the file's keys do not match: {len(missing)} missing {missing[:3]}, "
            f"{len(extra)} unexpected {extra[:3]}, {len(wrong)} with other shapes {wrong[:3]}"
        )


def weights_dir() -> Path:
    return Path(os.environ.get("SOUNDVCM_WEIGHTS", Path.home() / ".cache" / "soundvcm" / "weights"))


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def entry(name: str) -> WeightFile:
    if name not in REGISTRY:
        raise WeightsError(f"unknown weights '{name}'; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def resolve(name: str, directory: Path | None = None, check_md5: bool = True) -> Path:
    """The local path of a registered file, verified; a clear error if it is missing or wrong."""
    w = entry(name)
    path = (directory or weights_dir()) / w.filename
    fetch = f"Fetch it with: soundvcm weights download {name}  (or place {w.url} there)"
    if not path.is_file():
        raise WeightsError(f"{w.description}: {path} not found. {fetch}")
    if check_md5 and w.sha256_prefix is not None:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if not digest.startswith(w.sha256_prefix):
            raise WeightsError(f"{path}: SHA-256 {digest[:8]}... does not start with {w.sha256_prefix}. {fetch}")
    if check_md5 and w.md5 is not None:
        got = md5sum(path)
        if got != w.md5:
            raise WeightsError(
                f"{path}: md5 {got} does not match the expected {w.md5} (a corrupt or partial file?). {fetch}"
            )
    return path


def download(name: str, directory: Path | None = None, force: bool = False) -> Path:
    """Download one registered file (skipped if present and valid); md5 checked before the rename."""
    w = entry(name)
    directory = directory or weights_dir()
    target = directory / w.filename
    if target.is_file() and not force:
        try:
            return resolve(name, directory)
        except WeightsError:
            pass  # present but wrong: download again
    directory.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part")
    try:
        with urllib.request.urlopen(w.url, timeout=60) as response, open(tmp, "wb") as f:
            total = int(response.headers.get("content-length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=w.filename) as bar:
                while block := response.read(1 << 20):
                    f.write(block)
                    bar.update(len(block))
        if w.md5 is not None and (got := md5sum(tmp)) != w.md5:
            raise WeightsError(f"{w.url}: downloaded file has md5 {got}, expected {w.md5}")
        if w.sha256_prefix is not None and not hashlib.sha256(tmp.read_bytes()).hexdigest().startswith(w.sha256_prefix):
            raise WeightsError(f"{w.url}: downloaded file's SHA-256 does not start with {w.sha256_prefix}")
        os.replace(tmp, target)
    except OSError as exc:
        raise WeightsError(
            f"could not download {w.url} ({exc}); check the network or place the file at {target}"
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return target
