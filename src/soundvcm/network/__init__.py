"""Networks u(x, t, s, conditions) -> average velocity, in the paper's convention (see soundvcm.flow).

The configuration and the preset table (:mod:`soundvcm.network.config`) import without torch, so
the command line can list the presets; the modules (MMDiT, the toy network) load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "MMDiT": "soundvcm.network.mmdit",
    "VelocityNet": "soundvcm.network.protocol",
    "ToyNetConfig": "soundvcm.network.toy",
    "ToyVelocityNet": "soundvcm.network.toy",
    "MMDiTConfig": "soundvcm.network.config",
    "NETWORK_PRESETS": "soundvcm.network.config",
    "PRESETS": "soundvcm.network.config",
    "network_preset": "soundvcm.network.config",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'soundvcm.network' has no attribute {name!r}")


__all__ = list(_LAZY)
