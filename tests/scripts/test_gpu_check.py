"""scripts/gpu_check.sh and its helpers: syntax, the no-CUDA exit, and the MFU peak table."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = [ROOT / "scripts" / "gpu_check.sh", ROOT / "scripts" / "make_wheelhouse.sh"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script: Path) -> None:
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_is_clean() -> None:
    result = subprocess.run(["shellcheck", *map(str, SCRIPTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_without_cuda_it_stops_at_once_with_one_line(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # CUDA_VISIBLE_DEVICES="" hides any GPU, so this runs the same on a machine that has one
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "GPU_CHECK_PYTHON": sys.executable, "OUT": str(out)}
    env.pop("GPU_CHECK_DEVICE", None)
    t0 = time.monotonic()
    result = subprocess.run(
        ["bash", "scripts/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.splitlines()[-1].startswith("no CUDA device: gpu_check.sh needs a GPU")
    assert result.stdout == ""
    assert not out.exists()  # nothing was set up or written
    assert time.monotonic() - t0 < 60  # one torch import, no installs or steps


def test_unknown_argument_is_refused() -> None:
    result = subprocess.run(["bash", "scripts/gpu_check.sh", "--bogus"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "unknown argument '--bogus'" in result.stderr


def _bench_train():
    spec = importlib.util.spec_from_file_location("bench_train", ROOT / "scripts" / "bench_train.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("name", "tflops"),
    [  # dense bf16 from NVIDIA's datasheets; the names as torch.cuda.get_device_name() gives them
        ("NVIDIA H100 80GB HBM3", 989),
        ("NVIDIA H100 PCIe", 756),
        ("NVIDIA H200", 989),
        ("NVIDIA A100-SXM4-80GB", 312),
        ("Tesla T4", None),
        (None, None),
    ],
)
def test_mfu_peak_by_device_name(name: str | None, tflops: int | None) -> None:
    peak = _bench_train().peak_flops(name)
    assert peak == (tflops * 1e12 if tflops else None)
