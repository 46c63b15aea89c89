"""`nmt train --devices 2` (two gloo processes on CPU) stops together: no rank waits alone in a collective.

Each test starts the launcher, waits until training runs, makes the ranks disagree about
stopping (a signal to one rank, clocks that differ, a signal to the launcher), and checks
that every process exits within a minute and exactly one final checkpoint is written.
Process ids come from /proc: the launcher's descendants, ranks told apart by LOCAL_RANK.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nmt.checkpoint import read_checkpoint
from nmt.config import load_config
from nmt.data.prepare import prepare
from nmt.train.distributed import CLOCK_SKEW_ENV
from tests.corpora import FAST, toy_config

pytestmark = [
    pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc"),
    pytest.mark.slow,  # torchrun launchers (subprocesses): `make test-fast` skips them
]

COMMON = FAST + ["train.max_steps=100000", "train.log_every=2", "train.valid_every=100000", "train.precision=fp32"]


def parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])  # the comm field may hold spaces or ")"


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def descendants(root: int) -> list[int]:
    parents = {int(p.name): parent_pid(int(p.name)) for p in Path("/proc").iterdir() if p.name.isdigit()}
    found, frontier = [], [root]
    while frontier:
        children = [pid for pid, ppid in parents.items() if ppid in frontier]
        found += children
        frontier = children
    return found


def rank_pids(launcher: int) -> dict[int, int]:
    """LOCAL_RANK -> pid of each training worker below the launcher."""
    out = {}
    for pid in descendants(launcher):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in env:
            if item.startswith(b"LOCAL_RANK="):
                out[int(item.split(b"=")[1])] = pid
    return out


def start(tmp_path: Path, overrides: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Path]:
    """Prepare the toy experiment and launch `nmt train --devices 2`; output goes to tmp_path/log.txt."""
    cfg = toy_config(tmp_path, train=200, valid=4)
    prepare(load_config(cfg, COMMON + overrides))
    sets = [a for o in COMMON + overrides for a in ("--set", o)]
    log = open(tmp_path / "log.txt", "w")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen(
        [sys.executable, "-m", "nmt", "train", str(cfg), "--devices", "2", *sets],
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    return proc, tmp_path / "exp"


def wait_for_training(proc: subprocess.Popen, exp: Path) -> dict[int, int]:
    """Block until rank 0 has logged a step (both ranks are then in the loop); the worker pids."""
    metrics, deadline = exp / "metrics.jsonl", time.monotonic() + 120
    while not (metrics.is_file() and metrics.read_text().strip()):
        assert proc.poll() is None and time.monotonic() < deadline, "training did not start"
        time.sleep(0.2)
    pids = rank_pids(proc.pid)
    assert sorted(pids) == [0, 1], pids
    return pids


def finish(proc: subprocess.Popen, exp: Path, pids: list[int], *, timeout: float = 60) -> tuple[int, str]:
    """The launcher's exit code, once it and all `pids` are gone; kills everything left after `timeout`."""
    try:
        code = proc.wait(timeout=timeout)
        deadline = time.monotonic() + 10
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in pids if alive(p)], "processes left behind"
    finally:
        for pid in [*descendants(proc.pid), *pids]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, (exp.parent / "log.txt").read_text()


def checkpoint_files(exp: Path) -> list[str]:
    return sorted(p.name for p in (exp / "checkpoints").iterdir())


def test_sigterm_to_one_rank_stops_both(tmp_path: Path) -> None:
    proc, exp = start(tmp_path, [])
    pids = wait_for_training(proc, exp)
    os.kill(pids[1], signal.SIGTERM)
    _, log = finish(proc, exp, list(pids.values()))  # torchrun exits 1: its workers exited 143
    assert checkpoint_files(exp) == ["last.pt"], log[-3000:]
    assert read_checkpoint(exp / "checkpoints" / "last.pt")["step"] >= 2


def test_ranks_whose_clocks_differ_stop_after_the_same_step(tmp_path: Path) -> None:
    # rank 1's clock runs 28 s ahead: it reaches max_minutes (30 s) long before rank 0
    proc, exp = start(tmp_path, ["train.max_minutes=0.5"], env={CLOCK_SKEW_ENV: "1:28"})
    pids = wait_for_training(proc, exp)
    code, log = finish(proc, exp, list(pids.values()))
    assert code == 0, log[-3000:]
    files = checkpoint_files(exp)
    assert [f for f in files if f.startswith("step_")] == [
        f"step_{read_checkpoint(exp / 'checkpoints' / 'last.pt')['step']}.pt"
    ]
    loop = read_checkpoint(exp / "checkpoints" / "last.pt")["train_state"]["loop"]
    assert loop["elapsed_s"] < 30  # rank 0 (which saves) stopped on rank 1's clock
    assert "max_minutes" in " ".join(log.split())


def test_sigterm_to_the_launcher_is_forwarded(tmp_path: Path) -> None:
    proc, exp = start(tmp_path, [])
    pids = wait_for_training(proc, exp)
    everything = descendants(proc.pid)  # torchrun and both workers
    assert set(pids.values()) <= set(everything)
    proc.send_signal(signal.SIGTERM)
    code, log = finish(proc, exp, everything)
    assert code == 143, log[-3000:]
    assert checkpoint_files(exp) == ["last.pt"], log[-3000:]
    assert read_checkpoint(exp / "checkpoints" / "last.pt")["step"] >= 2
