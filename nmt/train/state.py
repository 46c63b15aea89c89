"""The loop's counters: resumable on the host (`TrainState`, saved in every checkpoint), running on
the device (`Counters`, read only at log time), and the run's outcome (`TrainResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from nmt.train.distributed import Dist


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
    averaged: dict[str, Any] = field(default_factory=dict)  # train.average_last: averaged.pt's validation record


@dataclass
class Counters:
    """Device-side training counters, read (one host sync) only at log time and before saves."""

    loss: torch.Tensor  # summed label-smoothed loss since the last log
    nll: torch.Tensor  # summed NLL since the last log
    consecutive_nonfinite: torch.Tensor  # current run of non-finite steps; survives log intervals
    nonfinite: torch.Tensor  # non-finite steps not yet added to TrainState.nonfinite_steps
    tokens: int = 0  # target tokens since the last log (known on the host)

    @classmethod
    def zeros(cls, device: torch.device, *, consecutive_nonfinite: int = 0) -> Counters:
        z = lambda: torch.zeros((), device=device)  # noqa: E731
        return cls(z(), z(), torch.full((), float(consecutive_nonfinite), device=device), z())

    def count_step(self, grad_norm: torch.Tensor) -> None:
        """After an optimizer step: extend or reset the run of non-finite steps (no host sync)."""
        bad = ~torch.isfinite(grad_norm)
        self.consecutive_nonfinite.copy_((self.consecutive_nonfinite + 1) * bad)
        self.nonfinite += bad

    def read(self, dist: Dist, state: TrainState) -> tuple[float, float, float]:
        """Summed (loss, nll, tokens) over all ranks since the last log; moves the non-finite counts
        into `state`. Host sync: one per call."""
        sums = dist.all_reduce_sum(torch.stack([self.loss, self.nll, self.loss.new_tensor(float(self.tokens))]))
        loss, nll, tokens, *nonfinite = torch.cat([sums, self._nonfinite()]).tolist()  # host sync
        self._move_nonfinite(state, *nonfinite)
        return loss, nll, tokens

    def sync_state(self, state: TrainState) -> None:
        """Move the non-finite counts into `state`, e.g. before a checkpoint."""
        self._move_nonfinite(state, *self._nonfinite().tolist())  # host sync: only when saving

    def _nonfinite(self) -> torch.Tensor:
        return torch.stack([self.consecutive_nonfinite, self.nonfinite])

    def _move_nonfinite(self, state: TrainState, run: float, new: float) -> None:
        state.consecutive_nonfinite, state.nonfinite_steps = int(run), state.nonfinite_steps + int(new)
        self.nonfinite.zero_()

    def reset_interval(self) -> None:
        """Start a new log interval; the run of non-finite steps carries on."""
        self.loss.zero_()
        self.nll.zero_()
        self.tokens = 0
