"""An experiment's checkpoint files: best/last links, keep-last-N, resume checks, averaging.

The format, reading and writing are `nmt.checkpoint`. `best.pt` and `last.pt` written at
a validation are hard links to that step's file (no second write).
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any

import torch

from nmt.checkpoint import checkpoint_config, read_checkpoint
from nmt.config import ExperimentConfig, config_to_dict, diff_configs
from nmt.errors import CheckpointError
from nmt.fileio import atomic_open

# Keys that may change between a run and its resumption; anything else must match.
RESUMABLE = (
    "name",
    "workdir",
    "decode.",
    "train.max_steps",
    "train.max_epochs",
    "train.max_minutes",
    "train.patience",
    "train.log_every",
    "train.valid_every",
    "train.save_every",
    "train.keep_last",
    "train.device",
    "data.splits.",
)


def link_checkpoint(source: Path, target: Path) -> None:
    """Make `target` name the same file as `source`, atomically (copy where links fail)."""
    tmp = target.with_name(f".{target.name}.link")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.link(source, tmp)
    except OSError:
        with atomic_open(tmp) as fh:
            fh.write(source.read_bytes())
    os.replace(tmp, target)


def prune_numbered(directory: Path, *, keep: int) -> None:
    """Delete all but the newest `keep` step_N.pt files."""
    for path in numbered_checkpoints(directory)[:-keep]:
        path.unlink()


def numbered_checkpoints(directory: Path) -> list[Path]:
    """step_N.pt files, oldest first."""
    found = [
        (int(m.group(1)), p) for p in directory.glob("step_*.pt") if (m := re.fullmatch(r"step_(\d+)\.pt", p.name))
    ]
    return [p for _, p in sorted(found)]


def read_resumable(path: Path, cfg: ExperimentConfig) -> dict[str, Any] | None:
    """The checkpoint at `path` (tensors on the CPU), checked for resuming under `cfg`; None when absent."""
    if not path.is_file():
        return None
    ckpt = read_checkpoint(path)
    check_resumable(ckpt, cfg, path)
    return ckpt


def check_resumable(ckpt: dict[str, Any], cfg: ExperimentConfig, path: Path) -> None:
    """CheckpointError naming the config keys that differ in ways a resume cannot honour."""
    stored = checkpoint_config(ckpt, path)
    differing = [
        key
        for key in diff_configs(config_to_dict(stored), config_to_dict(cfg))
        if not any(key == r or (r.endswith(".") and key.startswith(r)) for r in RESUMABLE)
    ]
    if differing:
        raise CheckpointError(
            f"{path}: cannot resume: the config differs from the checkpoint's in {', '.join(differing)}",
            hint="restore those values, or start over with `nmt train CONFIG --restart`",
        )
    if ckpt.get("train_state") is None:
        raise CheckpointError(f"{path}: has no training state (e.g. an averaged checkpoint); cannot resume")


def average_checkpoints(paths: list[Path]) -> dict[str, Any]:
    """A checkpoint whose weights are the mean of `paths`' (config/vocab from the last)."""
    if not paths:
        raise CheckpointError("no checkpoints to average")
    first = read_checkpoint(paths[-1])
    base_cfg = config_to_dict(checkpoint_config(first, paths[-1]))
    total: dict[str, torch.Tensor] = {
        k: v.double().clone() if v.is_floating_point() else v.clone() for k, v in first["model"].items()
    }
    for path in paths[:-1]:
        ckpt = read_checkpoint(path)
        differing = [
            k
            for k in diff_configs(config_to_dict(checkpoint_config(ckpt, path)), base_cfg)
            if k.startswith(("model.", "vocab."))
        ]
        if differing or ckpt["vocab"] != first["vocab"] or ckpt["model"].keys() != total.keys():
            raise CheckpointError(
                f"cannot average {path} with {paths[-1]}: they differ in "
                f"{', '.join(differing) or 'vocabulary or parameter names'}",
                hint="average checkpoints of one experiment only",
            )
        for key, value in ckpt["model"].items():
            if value.is_floating_point():
                total[key] += value.double()
    averaged = {
        k: (v / len(paths)).to(first["model"][k].dtype) if v.is_floating_point() else v for k, v in total.items()
    }
    return {**first, "model": averaged, "train_state": None, "averaged_from": [str(p) for p in paths]}
