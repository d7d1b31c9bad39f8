"""Training collaborators: EMA (here), and later the loop, checkpoints and distributed helpers."""
