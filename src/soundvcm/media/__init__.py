"""Media I/O with PyAV and soundfile: video frames at exact rates, audio, mel spectrograms, mux.

No torchvision, torchaudio or system ffmpeg: PyAV bundles FFmpeg. Every writer goes through a
temporary file and a rename, so a failure never leaves a half-written output.
"""

from soundvcm.media.audio import PEAK_DBFS, limit_peak, load_audio, resample, write_audio
from soundvcm.media.errors import MediaError
from soundvcm.media.mel import MEL_16K, MEL_44K, MEL_HIFIGAN, MelConfig, mel_spectrogram
from soundvcm.media.mux import mux_audio
from soundvcm.media.video import FrameSpec, VideoClip, load_image, load_video, probe

__all__ = [
    "MEL_16K",
    "MEL_44K",
    "MEL_HIFIGAN",
    "FrameSpec",
    "MediaError",
    "MelConfig",
    "VideoClip",
    "PEAK_DBFS",
    "limit_peak",
    "load_audio",
    "load_image",
    "load_video",
    "mel_spectrogram",
    "mux_audio",
    "probe",
    "resample",
    "write_audio",
]
