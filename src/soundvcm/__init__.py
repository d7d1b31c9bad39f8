"""soundvcm: velocity consistency models for few-step video-to-audio generation (SoundVCM).

The time convention (t = 1 noise, t = 0 data, v = eps - x0) is defined in :mod:`soundvcm.flow`.
"""

__version__ = "0.1.0"


def load_network(path, device="cpu"):
    """Load a soundvcm network checkpoint (NAME.json + NAME.safetensors) strictly; see
    :func:`soundvcm.network.checkpoint.load_network`."""
    from soundvcm.network.checkpoint import load_network as _load

    return _load(path, device)
