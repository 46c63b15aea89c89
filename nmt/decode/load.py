"""Load a self-contained checkpoint for inference: config, vocabulary and weights.

A checkpoint is a dict saved with `torch.save` that loads with `weights_only=True`:

    format: "nmt-checkpoint", version: 1, nmt_version: str
    config: the resolved config as a plain dict
    vocab: {"src": SentencePiece model bytes, "tgt": ...}
    model: the model's state_dict
    step, epoch: ints
    train_state: optimizer/scheduler/scaler/RNG/sampler state, or None (e.g. averaged)
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nmt.config import ExperimentConfig, config_from_dict
from nmt.data.vocab import Vocab
from nmt.errors import CheckpointError, ConfigError
from nmt.model import Seq2SeqModel, build_model

FORMAT = "nmt-checkpoint"
VERSION = 1


@dataclass
class LoadedModel:
    """What translation needs from a checkpoint."""

    model: Seq2SeqModel
    vocab: Vocab
    cfg: ExperimentConfig
    step: int
    path: Path


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


def checkpoint_config(ckpt: dict[str, Any], path: str | Path) -> ExperimentConfig:
    try:
        return config_from_dict(ckpt["config"], where=f"{path} (stored config)")
    except ConfigError as exc:
        raise CheckpointError(exc.message, hint="the checkpoint was written by an incompatible nmt version") from None


def load_model(path: str | Path, *, device: torch.device | str = "cpu") -> LoadedModel:
    """Rebuild the model and vocabulary of a checkpoint, in eval mode on `device`."""
    ckpt = read_checkpoint(path)
    cfg = checkpoint_config(ckpt, path)
    vocab = Vocab(ckpt["vocab"]["src"], ckpt["vocab"]["tgt"])
    model = build_model(cfg.model, src_vocab_size=vocab.src_size, tgt_vocab_size=vocab.tgt_size)
    try:
        model.load_state_dict(ckpt["model"])  # type: ignore[attr-defined]
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match the stored config ({str(exc).splitlines()[0]})") from None
    model.to(device).eval()  # type: ignore[attr-defined]
    return LoadedModel(model=model, vocab=vocab, cfg=cfg, step=int(ckpt.get("step", 0)), path=Path(path))


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda if available else cpu; 'cuda' without CUDA is an error."""
    from nmt.errors import NmtError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise NmtError(
            "device 'cuda' requested but CUDA is not available on this machine",
            hint="use --device cpu (or device: auto to fall back automatically)",
        )
    return torch.device(name)
