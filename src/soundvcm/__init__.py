"""soundvcm: velocity consistency models for few-step video-to-audio generation (SoundVCM).

The time convention (t = 1 noise, t = 0 data, v = eps - x0) is defined in :mod:`soundvcm.flow`.
"""

__version__ = "0.1.0"
