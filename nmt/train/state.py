"""The loop's resumable counters (`TrainState`, saved in every checkpoint) and its outcome (`TrainResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainState:
    """Everything besides weights/optimizer that a resume needs (saved in train_state)."""

    step: int = 0  # optimizer steps done
    epoch: int = 1  # current epoch (1-based)
    groups_done: int = 0  # optimizer steps done within the current epoch
    elapsed_s: float = 0.0  # training wall time so far, over all resumes
    best: float | None = None  # best validation metric (BLEU or loss)
    best_step: int = 0
    bad_valids: int = 0  # validations since the last improvement
    last_valid_step: int = 0
    nonfinite_steps: int = 0  # optimizer steps skipped for non-finite gradients
    consecutive_nonfinite: int = 0  # of those, the latest run of consecutive ones (as of the last read)


@dataclass
class TrainResult:
    state: TrainState
    stopped_by: str | None = None  # None while running; max_steps | max_epochs | max_minutes | patience | signal
    exit_code: int = 0
    last_valid: dict[str, Any] = field(default_factory=dict)
    params: int = 0
    graphs_compiled: int | None = None  # train.compile: graphs torch.compile built (None: not compiled)
