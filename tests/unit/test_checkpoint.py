"""The checkpoint format: written atomically, read back whole, bad files refused, old configs still load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nmt.checkpoint import read_checkpoint, save_checkpoint
from nmt.errors import CheckpointError
from tests.conftest import TinyCheckpoint, run_nmt


def test_a_checkpoint_tied_across_separate_vocabularies_still_translates_with_a_warning(
    tiny_checkpoint: TinyCheckpoint, tmp_path: Path
) -> None:
    """Such checkpoints were trained before the config refused the combination: they are what they are."""
    ckpt = read_checkpoint(tiny_checkpoint.path)
    ckpt["config"]["vocab"]["joint"] = False
    assert ckpt["config"]["model"]["share_embeddings"] == "all"
    old = tmp_path / "old.pt"
    save_checkpoint(old, ckpt)
    done = run_nmt("translate", str(old), "--beam", "2", input="alpha bravo\n\ncharlie\n")
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 3
    warnings = [line for line in done.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "share_embeddings: all" in warnings[0], done.stderr
    ok = run_nmt("translate", str(tiny_checkpoint.path), "--beam", "2", input="alpha bravo\n")
    assert ok.returncode == 0 and "warning" not in ok.stderr


def test_round_trip_and_corrupt_files(tiny_checkpoint: TinyCheckpoint, tmp_path: Path) -> None:
    ckpt = read_checkpoint(tiny_checkpoint.path)
    copy = tmp_path / "copy.pt"
    save_checkpoint(copy, ckpt)
    again = read_checkpoint(copy)
    assert again["config"] == ckpt["config"] and again["vocab"] == ckpt["vocab"]
    assert all(torch.equal(again["model"][k], v) for k, v in ckpt["model"].items())
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes(copy.read_bytes()[: copy.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a readable nmt checkpoint"):
        read_checkpoint(truncated)
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an nmt checkpoint"):
        read_checkpoint(tmp_path / "other.pt")
