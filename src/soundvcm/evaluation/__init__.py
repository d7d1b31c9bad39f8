"""Evaluation: metrics as pure functions (``metrics.py``), the embedders they read (aisfx, PANNs,
VGGish, PaSST, ImageBind, Synchformer), onset and material scoring of events (``events.py``),
video metrics (``video_metrics.py``) and ``soundvcm evaluate`` (``evaluate.py``)."""
