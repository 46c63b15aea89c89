"""The last step of every `nmt import`: foreign weights under nmt's names -> a checked, self-contained
nmt checkpoint, written atomically (through `nmt.checkpoint`).

Each reader (`marian.py`, `fairseq.py`) maps its toolkit's state dict onto nmt's parameter names and
its ids onto nmt's id table; `write_imported` builds the model the config and layout describe, checks
that every parameter is there with the right shape, loads them, checks the SentencePiece models, and
writes the checkpoint (step 0, no optimizer state: `train.init_from` starts a fresh schedule).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from nmt.checkpoint import build_checkpoint, save_checkpoint
from nmt.config import ExperimentConfig
from nmt.data.vocab import Vocab
from nmt.errors import NmtError
from nmt.marian_format import NMT_LAYER_NAMES
from nmt.model import build_model
from nmt.model.layout import Layout
from nmt.tokens import BOS_ID


@dataclass(frozen=True)
class ImportResult:
    """What an `nmt import` wrote."""

    output: Path
    src_lang: str
    tgt_lang: str  # the target language, or the tagged ones ("fra, deu, ...") of a multi-target model
    params: int
    vocab_size: int
    share_embeddings: str
    source_note: str = ""  # where the importer found what it read besides the weights, for the summary line


NO_LOGIT = -1e4  # the output bias of the start row nmt adds (bos): out of every softmax, finite for the loss


def layer_weights(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """The encoder and decoder layers' weights under nmt's names, from keys
    `<prefix>{encoder,decoder}.layers.<i>.<name>.{weight,bias}` with MarianMT's (and fairseq's, which
    are the same) sublayer names (`nmt.marian_format`)."""
    out = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        parts = key[len(prefix) :].split(".")
        if len(parts) < 4 or parts[0] not in ("encoder", "decoder") or parts[1] != "layers":
            continue
        stack, index, name, kind = parts[0], parts[2], ".".join(parts[3:-1]), parts[-1]
        if name in NMT_LAYER_NAMES:
            out[f"{stack}.{index}.{NMT_LAYER_NAMES[name]}.{kind}"] = value
    return out


def start_row_bias(bias: torch.Tensor) -> torch.Tensor:
    """An output bias (V,) with the start row (bos, which the importers add) out of every softmax."""
    out = bias.clone()
    out[BOS_ID] = NO_LOGIT
    return out


def write_imported(
    *,
    output: Path,
    cfg: ExperimentConfig,
    layout: Layout,
    weights: dict[str, torch.Tensor],
    vocab_models: tuple[bytes, bytes],
    pieces: tuple[list[str], list[str]],
    bad: Callable[[str], NmtError],
) -> int:
    """Write the checkpoint; returns the parameter count. `bad(what)` makes the one-paragraph error for
    a missing or misshapen tensor or an unreadable SentencePiece model; nothing is written then."""
    model = build_model(cfg.model, src_vocab_size=len(pieces[0]), tgt_vocab_size=len(pieces[1]), layout=layout)
    expected = model.state_dict()  # type: ignore[attr-defined]
    missing = sorted(set(expected) - set(weights))
    if missing:
        raise bad(f"the weights lack {len(missing)} tensors nmt's model needs (e.g. {missing[0]})")
    wrong = [k for k in expected if tuple(weights[k].shape) != tuple(expected[k].shape)]
    if wrong:
        got, want = tuple(weights[wrong[0]].shape), tuple(expected[wrong[0]].shape)
        raise bad(f"{wrong[0]} has shape {got}, the model's description implies {want}")
    model.load_state_dict({k: weights[k].float() for k in expected})  # type: ignore[attr-defined]
    try:
        Vocab(*vocab_models)
    except RuntimeError as exc:
        raise bad(f"a SentencePiece model is not readable ({str(exc).splitlines()[0][:200]})") from None
    ckpt = build_checkpoint(
        model_state=model.state_dict(),  # type: ignore[attr-defined]
        cfg=cfg,
        vocab_models=vocab_models,
        step=0,
        epoch=0,
        train_state=None,
        pieces=pieces,
        layout=layout.to_dict(),
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(output, ckpt)
    return sum(p.numel() for p in model.parameters())  # type: ignore[attr-defined]
