"""The checkpoint format: what a checkpoint holds, and the one reader and writer of it.

A checkpoint is a dict saved with `torch.save` that loads with `weights_only=True`:

    format: "nmt-checkpoint", version: 1, nmt_version: str
    config: the resolved config as a plain dict
    vocab: {"src": SentencePiece model bytes, "tgt": ...}  (the same bytes when joint); an imported
           model's also "src_pieces"/"tgt_pieces": the piece of every model id (`nmt.data.vocab.Vocab`)
    layout: an imported model's differences from nmt's own (`nmt.model.layout`; absent otherwise)
    model: the model's state_dict
    step, epoch: ints
    train_state: optimizer/scaler/RNG/loop state, or None (e.g. averaged)
    prepared: {"vocab": sha256, "data": sha256} of the prepared data it trained on
              (absent in checkpoints of nmt before 0.x that recorded none; a resume checks it)

It is self-contained: `nmt translate ckpt.pt` needs nothing else. Writes are atomic
(temp file, fsync, rename), so a crash mid-write leaves the previous file intact.
This module is a leaf: building the model from a checkpoint is `nmt.decode.load`'s job,
deciding which checkpoints to keep is `nmt.train.saving`'s.
"""

from __future__ import annotations

import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nmt import __version__
from nmt.config import ExperimentConfig, config_from_dict, config_to_dict
from nmt.console import warn
from nmt.errors import CheckpointError, ConfigError
from nmt.fileio import atomic_open

FORMAT = "nmt-checkpoint"
VERSION = 1


def build_checkpoint(
    *,
    model_state: dict[str, torch.Tensor],
    cfg: ExperimentConfig,
    vocab_models: tuple[bytes, bytes],
    step: int,
    epoch: int,
    train_state: dict[str, Any] | None,
    prepared: dict[str, str] | None = None,
    pieces: tuple[list[str], list[str]] | None = None,
    layout: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint dict; `vocab_models` are the (source, target) SentencePiece model bytes,
    `prepared` the fingerprints of the prepared data trained on (`nmt.data.prepare.fingerprints`);
    `pieces` and `layout` are an imported model's (see the module docstring)."""
    vocab: dict[str, Any] = {"src": vocab_models[0], "tgt": vocab_models[1]}
    if pieces is not None:
        vocab |= {"src_pieces": list(pieces[0]), "tgt_pieces": list(pieces[1])}
    return {
        "format": FORMAT,
        "version": VERSION,
        "nmt_version": __version__,
        "config": config_to_dict(cfg),
        "vocab": vocab,
        **({"layout": dict(layout)} if layout else {}),
        "model": plain_state_dict(model_state),
        "step": step,
        "epoch": epoch,
        "train_state": train_state,
        **({"prepared": dict(prepared)} if prepared is not None else {}),
    }


def plain_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` without the key prefixes of torch.compile (`_orig_mod.`) and DDP (`module.`) wrappers,
    so that a checkpoint loads into a plain model whatever wrapped the one that trained."""
    out = state
    while out and (prefix := next((p for p in ("_orig_mod.", "module.") if all(k.startswith(p) for k in out)), None)):
        out = {k.removeprefix(prefix): v for k, v in out.items()}
    return out


def save_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    """Atomic torch.save (temp file, fsync, rename)."""
    with atomic_open(path) as fh:
        torch.save(checkpoint, fh)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict, or CheckpointError when missing, corrupt or not ours."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: not a readable nmt checkpoint ({first[:200]})",
            hint="the file may be truncated or corrupt; use another checkpoint (e.g. checkpoints/step_N.pt)",
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an nmt checkpoint")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {ckpt.get('version')} is not supported "
            f"(this nmt reads version {VERSION})"
        )
    return ckpt


def stored_config(path: str | Path) -> dict[str, Any]:
    """The config a checkpoint stores, as a plain dict (for `load_config(read_stored=...)`: fine-tuning)."""
    return read_checkpoint(path)["config"]


def load_weights(model: torch.nn.Module, ckpt: dict[str, Any], path: str | Path) -> None:
    """Load a checkpoint's weights into `model` (built from its config); CheckpointError when they differ."""
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match the stored config ({str(exc).splitlines()[0]})") from None


def checkpoint_config(ckpt: dict[str, Any], path: str | Path) -> ExperimentConfig:
    """The config stored in a checkpoint, validated like a config file."""
    try:
        cfg = config_from_dict(ckpt["config"], where=f"{path} (stored config)")
    except ConfigError as exc:
        raise CheckpointError(exc.message, hint="the checkpoint was written by an incompatible nmt version") from None
    if cfg.model.share_embeddings == "all" and not cfg.vocab.joint:
        warn(
            f"{path}: trained with share_embeddings: all over two separate vocabularies (source and target "
            "pieces with the same id share one embedding); it translates as trained, but retrain with "
            "vocab.joint: true or share_embeddings: decoder"
        )
    return cfg


def rng_state() -> dict[str, Any]:
    """Every RNG state, as types `torch.load(weights_only=True)` accepts."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
