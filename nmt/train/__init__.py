"""Training stage: the loop and its small helpers (loss, optimizer, precision, DDP, checkpoints, signals)."""
