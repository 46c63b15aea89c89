"""User-facing errors: a message, an optional hint, and a stable exit code.

Anything a user can cause (bad config, missing file, corrupt checkpoint) raises a
subclass of `NmtError`; `cli.py` prints it as one paragraph and exits with its code.
A traceback means a bug in nmt.
"""

from __future__ import annotations


class NmtError(Exception):
    """An error caused by the user's input, shown without a traceback."""

    exit_code: int = 2

    def __init__(self, message: str, hint: str | None = None, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\nhint: {self.hint}"


class ConfigError(NmtError):
    """The experiment config (YAML or --set) is invalid."""


class DataError(NmtError):
    """Input text or prepared data is missing or malformed."""


class CheckpointError(NmtError):
    """A checkpoint is missing, corrupt or incompatible."""


class TrainingStopped(NmtError):
    """Training stopped for a reason the user must act on (e.g. non-finite losses)."""

    exit_code = 3
