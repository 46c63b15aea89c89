"""`nmt train --devices K`: re-launch the same command under torchrun, one process per device.

torchrun runs in a session of its own, and each worker in another one (torchrun starts
them so), so a Ctrl-C in the terminal reaches only this launcher. The launcher forwards
SIGINT/SIGTERM to torchrun's process group; torchrun passes the signal on to every
worker, the workers agree to stop after the same step, rank 0 saves, and all exit. The
launcher then exits like a single process would: 128 + the signal number.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

# How long torchrun lets the workers finish their step and save after a signal before
# it kills them.
SHUTDOWN_TIMEOUT_S = 120


def torchrun_args(
    config: Path, *, devices: int, overrides: list[str], restart: bool, new_data: bool = False
) -> list[str]:
    """The torchrun command line that runs `nmt train CONFIG` in `devices` processes."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={devices}",
        f"--shutdown_timeout={SHUTDOWN_TIMEOUT_S}",
        "-m",
        "nmt",
        "train",
        str(config),
        *[a for s in overrides for a in ("--set", s)],
        *(["--restart"] if restart else []),
        *(["--new-data"] if new_data else []),
    ]


def launch(config: Path, *, devices: int, overrides: list[str], restart: bool, new_data: bool = False) -> int:
    """Run training under torchrun and wait; returns the exit code for the `nmt train` process.

    That is 128 + signum when this process got SIGINT/SIGTERM (forwarded to the workers,
    which save and stop), else torchrun's own exit code.
    """
    proc = subprocess.Popen(
        torchrun_args(config, devices=devices, overrides=overrides, restart=restart, new_data=new_data),
        start_new_session=True,
    )
    received: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:  # torchrun already gone
            pass

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 + received[0] if received else code
