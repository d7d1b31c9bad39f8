"""Evaluation: metrics as pure functions (here); embedders and ``soundvcm evaluate`` are planned."""
