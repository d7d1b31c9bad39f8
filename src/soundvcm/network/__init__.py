"""Networks u(x, t, s, conditions) -> average velocity, in the paper's convention (see soundvcm.flow)."""

from soundvcm.network.mmdit import NETWORK_PRESETS, MMDiT, MMDiTConfig, network_preset
from soundvcm.network.protocol import VelocityNet
from soundvcm.network.toy import ToyNetConfig, ToyVelocityNet

__all__ = ["VelocityNet", "ToyNetConfig", "ToyVelocityNet", "MMDiT", "MMDiTConfig", "NETWORK_PRESETS", "network_preset"]
