"""Why training stops early: SIGINT/SIGTERM, the time budget, patience, as one comparable code.

Each rank computes its own `StopCode` after every optimizer step from host values only
(no device work), and the ranks agree on the largest one (`Dist.agree_max`), so every
rank leaves the loop after the same step. A second signal interrupts at once.
"""

from __future__ import annotations

import enum
import signal
from types import FrameType


class StopCode(enum.IntEnum):
    """Ordered by precedence: when ranks disagree, the largest wins (a signal beats the clock)."""

    NONE = 0
    PATIENCE = 1
    MAX_MINUTES = 2
    SIGINT = 3
    SIGTERM = 4

    @property
    def reason(self) -> str:
        """The `TrainResult.stopped_by` value."""
        return {StopCode.PATIENCE: "patience", StopCode.MAX_MINUTES: "max_minutes"}.get(self, "signal")

    @property
    def exit_code(self) -> int:
        """128 + signal number for a signal (130 SIGINT, 143 SIGTERM); 0 otherwise."""
        signums = {StopCode.SIGINT: signal.SIGINT, StopCode.SIGTERM: signal.SIGTERM}
        return 128 + signums[self] if self in signums else 0


class StopFlag:
    """Installed for the duration of training; records the first SIGINT/SIGTERM."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def code(self) -> StopCode:
        if self.signum is None:
            return StopCode.NONE
        return StopCode.SIGTERM if self.signum == signal.SIGTERM else StopCode.SIGINT

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:  # second signal: give up on the clean stop
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. inside some notebook runners)
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


def local_stop(flag: StopFlag, *, elapsed_s: float, max_minutes: float | None, patience_reached: bool) -> StopCode:
    """This rank's view after a step: signal first, then the time budget, then patience."""
    if flag.signum is not None:
        return flag.code
    if max_minutes is not None and elapsed_s >= 60 * max_minutes:
        return StopCode.MAX_MINUTES
    return StopCode.PATIENCE if patience_reached else StopCode.NONE
