"""A training run's checkpoints, in one module: what a resumable checkpoint holds of the run
(weights, optimizer, scaler, RNG and loop state, the prepared data's fingerprints), saving it
(`last.pt`; `step_N.pt` at validations and every `train.save_every` steps, with `last.pt` and
`best.pt` hard links to it, no second write; keep-last-N), resuming (the config and data checks), and averaging.

The file format itself (build, atomic write, read) is `nmt.checkpoint`, a leaf. `Saver` is
built once at set-up with everything a save or a resume needs, so the loop passes a state.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from nmt.checkpoint import (
    build_checkpoint,
    checkpoint_config,
    read_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from nmt.config import ExperimentConfig, config_to_dict, diff_configs
from nmt.console import info, warn
from nmt.data.prepared import TrainingData
from nmt.data.vocab import Vocab
from nmt.errors import CheckpointError, NmtError
from nmt.experiment import Experiment
from nmt.fileio import atomic_open
from nmt.precision import Precision
from nmt.train.state import TrainState

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


@dataclass
class Saver:
    """Saves and restores one run's checkpoints; built once at set-up."""

    exp: Experiment
    cfg: ExperimentConfig
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    precision: Precision
    data: TrainingData
    layout: dict[str, Any] = field(default_factory=dict)  # an imported model's (nmt.model.layout), kept in every save

    def read_resumable(self) -> dict[str, Any] | None:
        """`checkpoints/last.pt` checked for resuming under this config; None when absent."""
        return read_resumable(self.exp.last_checkpoint, self.cfg)

    def resume(self, ckpt: dict[str, Any], *, new_data: bool, announce: bool) -> TrainState:
        """Restore weights, optimizer, scaler and RNG states from `ckpt` (read by `read_resumable`),
        after checking it trained on these prepared data (`check_same_prepared`)."""
        path, vocab = self.exp.last_checkpoint, self.data.vocab
        changed = check_same_prepared(
            ckpt,
            path,
            vocab_models=(vocab.src_model, vocab.tgt_model),
            prepared=self.data.fingerprints,
            data_dir=self.exp.data_dir,
            new_data=new_data,
        )
        self.model.load_state_dict(ckpt["model"])
        ts = ckpt["train_state"]
        self.optimizer.load_state_dict(ts["optimizer"])
        self.precision.scaler.load_state_dict(ts["scaler"])
        set_rng_state(ts["rng"])
        state = TrainState(**ts["loop"])
        if changed:  # the epoch's batches were cut from other data: start this epoch over on the new data
            state.groups_done = 0
        if announce:
            trained, now = ts.get("precision"), self.precision.name  # absent in checkpoints of older nmt
            if trained is not None and trained != now:
                info(
                    f"{path} was trained in {trained}; this run continues in {now} "
                    f"(train.precision: {self.cfg.train.precision} resolves so on this machine)"
                )
            info(
                f"resuming from {path} at step {state.step:,} (epoch {state.epoch})"
                f"{' on new prepared data (--new-data), the epoch starting over' if changed else ''}; "
                "--restart starts over"
            )
        return state

    def save_last(self, state: TrainState, *, path: Path | None = None) -> None:
        """Write a resumable checkpoint to `path` (default: checkpoints/last.pt)."""
        vocab = self.data.vocab
        train_state = {
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.precision.scaler.state_dict(),
            "precision": self.precision.name,
            "rng": rng_state(),
            "loop": asdict(state),
        }
        checkpoint = build_checkpoint(
            model_state=self.model.state_dict(),
            cfg=self.cfg,
            vocab_models=(vocab.src_model, vocab.tgt_model),
            step=state.step,
            epoch=state.epoch,
            train_state=train_state,
            prepared=self.data.fingerprints,
            pieces=vocab.checkpoint_pieces(),
            layout=self.layout,
        )
        save_checkpoint(path or self.exp.last_checkpoint, checkpoint)

    def save_numbered(self, state: TrainState, *, improved: bool = False) -> None:
        """Write step_N.pt, point last.pt (and best.pt when a validation `improved`) at it, keep the newest
        `train.keep_last` step_N.pt: after a validation, and every `train.save_every` steps between them
        (as fairseq's --save-interval-updates), so `train.average_last` can average closer checkpoints."""
        path = self.exp.checkpoint_dir / f"step_{state.step}.pt"
        self.save_last(state, path=path)
        link_checkpoint(path, self.exp.last_checkpoint)
        if improved:
            link_checkpoint(path, self.exp.best_checkpoint)
        prune_numbered(self.exp.checkpoint_dir, keep=self.cfg.train.keep_last)


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


def check_same_prepared(
    ckpt: dict[str, Any],
    path: Path,
    *,
    vocab_models: tuple[bytes, bytes],
    prepared: dict[str, str],
    data_dir: Path,
    new_data: bool,
) -> bool:
    """Whether `ckpt` may resume on the prepared data now in `data_dir`; True when the data differ
    and `new_data` allows it (the caller starts the epoch over).

    A different vocabulary is always a CheckpointError (the weights' ids would name other pieces);
    different data under the same vocabulary is one unless `new_data` (`nmt train --new-data`).
    The vocabulary is compared by its bytes, which every checkpoint holds; the data by the
    fingerprint a checkpoint records since nmt recorded one (older ones: a warning).
    """
    src, tgt = ckpt["vocab"]["src"], ckpt["vocab"]["tgt"]
    if (src, tgt) != vocab_models:
        ckpt_sha, now_sha = (hashlib.sha256(a + b).hexdigest()[:12] for a, b in ((src, tgt), vocab_models))
        raise CheckpointError(
            f"{path}: cannot resume: it was trained with vocabulary {ckpt_sha} but the prepared data in {data_dir} "
            f"have vocabulary {now_sha} (nmt prepare built a new SentencePiece model, e.g. because the corpus "
            "changed); its weights would be read as other pieces",
            hint="start over with `nmt train CONFIG --restart`, or restore the data it was trained on and re-run "
            "`nmt prepare CONFIG`",
        )
    recorded = (ckpt.get("prepared") or {}).get("data")
    if recorded is None:
        warn(f"{path} records no fingerprint of its training data (an older nmt wrote it): not checked")
        return False
    if recorded == prepared["data"]:
        return False
    if not new_data:
        raise CheckpointError(
            f"{path}: cannot resume: it was trained on other prepared data (fingerprint {recorded[:12]}) than those "
            f"now in {data_dir} ({prepared['data'][:12]}), under the same vocabulary",
            hint="to continue training these weights on the new data, run `nmt train CONFIG --new-data`; "
            "to start over, `--restart`",
        )
    return True


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


def average_last(exp_dir: Path, last: int, output: Path | None = None) -> tuple[list[Path], Path]:
    """Average the newest `last` step_N.pt of an experiment dir into `output` (default:
    checkpoints/averaged.pt); returns the checkpoints averaged and the output."""
    if not exp_dir.is_dir():
        raise NmtError(f"{exp_dir}: not an experiment directory", hint="nmt average --last N EXPDIR")
    paths = numbered_checkpoints(exp_dir / "checkpoints")[-last:]
    if not paths:
        raise NmtError(f"{exp_dir / 'checkpoints'}: no step_*.pt checkpoints to average")
    output = output or exp_dir / "checkpoints" / "averaged.pt"
    save_checkpoint(output, average_checkpoints(paths))
    return paths, output


def read_init(cfg: ExperimentConfig, vocab: Vocab) -> dict[str, Any]:
    """`train.init_from`'s checkpoint, checked to hold the vocabulary the data were prepared with."""
    path = str(cfg.train.init_from)
    ckpt = read_checkpoint(path)
    theirs = Vocab.from_checkpoint(ckpt["vocab"])
    same = (theirs.src_model, theirs.tgt_model, theirs.src_pieces, theirs.tgt_pieces) == (
        vocab.src_model, vocab.tgt_model, vocab.src_pieces, vocab.tgt_pieces,
    )  # fmt: skip
    if not same:
        raise CheckpointError(
            f"{path} (train.init_from) has another vocabulary than the prepared data: the checkpoint was replaced "
            "after `nmt prepare`",
            hint="run `nmt prepare CONFIG --force` to encode the data with this checkpoint's vocabulary",
        )
    return ckpt
