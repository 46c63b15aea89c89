"""Load a checkpoint for inference: config, vocabulary and weights, the model in eval mode.

The format itself is `nmt.checkpoint`. An exported CTranslate2 directory loads into the
same `LoadedModel`, its `model` then a `SearchEngine` (`nmt.decode.ct2.load_export`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from nmt.checkpoint import checkpoint_config, load_weights, read_checkpoint
from nmt.config import ExperimentConfig
from nmt.data.vocab import Vocab
from nmt.decode.search import SearchEngine
from nmt.model import Seq2SeqModel, build_model
from nmt.model.layout import checkpoint_layout


@dataclass
class LoadedModel:
    """What translation needs from a checkpoint or an exported model directory."""

    model: Seq2SeqModel | SearchEngine  # a torch model (checkpoint) or an engine (export); both have max_len
    vocab: Vocab
    cfg: ExperimentConfig
    step: int
    path: Path


def load_model(path: str | Path, *, device: torch.device | str = "cpu") -> LoadedModel:
    """Rebuild the model and vocabulary of a checkpoint, in eval mode on `device`."""
    ckpt = read_checkpoint(path)
    cfg = checkpoint_config(ckpt, path)
    vocab = Vocab.from_checkpoint(ckpt["vocab"])
    model = build_model(
        cfg.model, src_vocab_size=vocab.src_size, tgt_vocab_size=vocab.tgt_size, layout=checkpoint_layout(ckpt, path)
    )
    load_weights(model, ckpt, path)  # type: ignore[arg-type]
    model.to(device).eval()  # type: ignore[attr-defined]
    return LoadedModel(model=model, vocab=vocab, cfg=cfg, step=int(ckpt.get("step", 0)), path=Path(path))
