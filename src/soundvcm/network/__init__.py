"""Networks u(x, t, s, conditions) -> average velocity, in the paper's convention (see soundvcm.flow)."""

from soundvcm.network.protocol import VelocityNet
from soundvcm.network.toy import ToyNetConfig, ToyVelocityNet

__all__ = ["VelocityNet", "ToyNetConfig", "ToyVelocityNet"]
