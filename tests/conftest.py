"""Shared fixtures: pinned threads, NMT_DATA, tiny parallel corpora, CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("NMT_DATA", str((ROOT.parent / "shared" / "data").resolve()))
os.environ["NMT_DATA"] = str(Path(os.environ["NMT_DATA"]).resolve())
# On 2 busy cores, oversubscribed threads make small matmuls 25x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config: pytest.Config) -> None:
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def multi30k() -> Path:
    path = Path(os.environ["NMT_DATA"]) / "multi30k"
    if not (path / "train.de.gz").is_file():
        pytest.skip(f"Multi30k not found under NMT_DATA={os.environ['NMT_DATA']}")
    return path


def run_nmt(
    *args: str,
    cwd: Path | None = None,
    input: str | bytes | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess (`python -m nmt`)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    text = not isinstance(input, bytes)
    return subprocess.run(
        [sys.executable, "-m", "nmt", *args],
        cwd=cwd,
        input=input,
        capture_output=True,
        text=text,
        env=full_env,
        timeout=timeout,
    )


@pytest.fixture
def nmt_cli():
    return run_nmt
