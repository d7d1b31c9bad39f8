"""Training: the loop (``trainer.py``: one optimizer step in ``step.py``, engines for one process,
DDP, FSDP2 and a flat all-reduce in ``parallel.py``), typed configs and presets (``config.py``),
checkpoints and resume, post-hoc EMA (``posthoc_ema.py``, export in ``export.py``), fine-tuning
sources (``finetune.py``), validation and samples, and the fast vocoder's distillation
(``vocoder.py``)."""
