"""`nmt train` as users run it: signals, resume, torchrun DDP, average."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nmt.checkpoint import read_checkpoint
from nmt.config import load_config
from nmt.data.prepare import prepare
from tests.conftest import run_nmt
from tests.corpora import FAST, toy_config


def sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


@pytest.mark.slow  # `nmt train` subprocesses, one stopped by a signal
def test_sigterm_saves_a_checkpoint_and_train_resumes(tmp_path: Path) -> None:
    cfg = toy_config(tmp_path, train=200, valid=10)
    prepare(load_config(cfg, FAST))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [
        sys.executable,
        "-m",
        "nmt",
        "train",
        str(cfg),
        *sets(FAST + ["train.max_steps=100000", "train.log_every=5", "train.valid_every=100000"]),
    ]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "exp" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and metrics.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "to resume" in " ".join(err.split())
    ckpt = read_checkpoint(tmp_path / "exp" / "checkpoints" / "last.pt")
    step = ckpt["step"]
    assert step >= 5 and ckpt["train_state"]["loop"]["step"] == step
    result = run_nmt("train", str(cfg), *sets(FAST + [f"train.max_steps={step + 3}", "train.valid_every=100000"]))
    assert result.returncode == 0, result.stderr
    assert f"resuming from {tmp_path / 'exp' / 'checkpoints' / 'last.pt'} at step {step}" in " ".join(
        result.stderr.split()
    )
    assert read_checkpoint(tmp_path / "exp" / "checkpoints" / "last.pt")["step"] == step + 3
    # the validation at the end drew the training curves from metrics.jsonl (both runs' records)
    assert (tmp_path / "exp" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # two torchrun processes
def test_ddp_two_processes_equal_one_process_with_both_halves(tmp_path: Path) -> None:
    common = FAST + [
        "model.dropout=0",
        "train.max_steps=1",
        "train.valid_every=100",
        "train.log_every=1",
        "train.warmup_steps=0",
        "train.lr=1e-2",
    ]
    single = toy_config(tmp_path / "single", train=200, valid=10)
    prepare(load_config(single, common))
    result = run_nmt("train", str(single), *sets(common + ["train.accum_steps=2"]))
    assert result.returncode == 0, result.stderr
    ddp = toy_config(tmp_path / "ddp", train=200, valid=10)
    prepare(load_config(ddp, common))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            # `nmt train --devices 2` re-launches itself under torchrun (python -m torch.distributed.run)
            sys.executable,
            "-m",
            "nmt",
            "train",
            str(ddp),
            "--devices",
            "2",
            *sets(common),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = read_checkpoint(tmp_path / "single" / "exp" / "checkpoints" / "last.pt")["model"]
    b = read_checkpoint(tmp_path / "ddp" / "exp" / "checkpoints" / "last.pt")["model"]
    initial_differs = False
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
        initial_differs |= bool(a[key].abs().sum() > 0)
    assert initial_differs
    # both trained on the same tokens: one record each, same token count
    rec_a = [json.loads(x) for x in (tmp_path / "single" / "exp" / "metrics.jsonl").read_text().splitlines()]
    rec_b = [json.loads(x) for x in (tmp_path / "ddp" / "exp" / "metrics.jsonl").read_text().splitlines()]
    assert rec_a[0]["loss"] == pytest.approx(rec_b[0]["loss"], rel=1e-5)


@pytest.mark.slow  # `nmt train` and `nmt average` subprocesses
def test_average_last_n(tmp_path: Path) -> None:
    cfg = toy_config(tmp_path, train=100, valid=10)
    prepare(load_config(cfg, FAST))
    result = run_nmt("train", str(cfg), *sets(FAST + ["train.max_steps=6", "train.valid_every=2"]))
    assert result.returncode == 0, result.stderr
    avg = run_nmt("average", "--last", "3", str(tmp_path / "exp"))
    assert avg.returncode == 0, avg.stderr
    ckpts = [read_checkpoint(tmp_path / "exp" / "checkpoints" / f"step_{n}.pt")["model"] for n in (2, 4, 6)]
    out = read_checkpoint(tmp_path / "exp" / "checkpoints" / "averaged.pt")
    assert out["train_state"] is None
    for key, value in out["model"].items():
        if value.is_floating_point():
            torch.testing.assert_close(value, sum(c[key] for c in ckpts) / 3)
    translated = run_nmt("translate", str(tmp_path / "exp" / "checkpoints" / "averaged.pt"), input="alpha bravo\n")
    assert translated.returncode == 0 and translated.stdout.count("\n") == 1


@pytest.mark.slow  # three `nmt train` subprocesses
def test_precision_auto_is_reported_and_a_resume_in_another_precision_says_so(tmp_path: Path) -> None:
    """NMT_CPU_BF16 stands for the machine: a run where auto gave fp32, resumed where it gives bf16."""
    cfg = toy_config(tmp_path, train=200, valid=10)
    prepare(load_config(cfg, FAST))
    common = FAST + ["train.valid_every=100000", "train.precision=auto"]
    first = run_nmt("train", str(cfg), *sets(common + ["train.max_steps=2"]), env={"NMT_CPU_BF16": "0"})
    assert first.returncode == 0, first.stderr
    assert "precision fp32 (auto: this CPU has no native bf16)" in " ".join(first.stderr.split())
    assert read_checkpoint(tmp_path / "exp" / "checkpoints" / "last.pt")["train_state"]["precision"] == "fp32"
    second = run_nmt("train", str(cfg), *sets(common + ["train.max_steps=4"]), env={"NMT_CPU_BF16": "1"})
    assert second.returncode == 0, second.stderr
    text = " ".join(second.stderr.split())
    assert "precision bf16 (auto: this CPU has native bf16)" in text
    assert "was trained in fp32; this run continues in bf16" in text
    forced = run_nmt(
        "train",
        str(cfg),
        "--restart",
        *sets(FAST + ["train.max_steps=2", "train.precision=bf16"]),
        env={"NMT_CPU_BF16": "0"},
    )
    assert forced.returncode == 0, forced.stderr
    assert "bf16 is emulated and slower than fp32" in " ".join(forced.stderr.split())
