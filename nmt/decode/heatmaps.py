"""Attention heatmaps of finished translations (`nmt translate --attention-dir`).

The weights are taken independently of the search: after a sentence is translated, the
model is run teacher-forced on (source ids, [bos] + best hypothesis) with
`return_attention=True`, which gives one row of source weights (S) per target position:
row t is the attention while producing target token t (the last row produces </s>).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from nmt.console import info
from nmt.decode.load import LoadedModel
from nmt.errors import NmtError
from nmt.model import Seq2SeqModel
from nmt.tokens import BOS_ID, EOS_ID, PAD_ID

NO_ATTENTION = (
    "this model has no attention (e.g. a recurrent model with model.attention: none), so there are no "
    "source-target weights to draw"
)
NO_ATTENTION_HINT = "drop --attention-dir, or translate with a model that has attention"


@dataclass
class FirstLines:
    """The first `n` input lines and the ids of their best translations, kept as they pass."""

    n: int
    lines: list[str] = field(default_factory=list)
    best: list[tuple[int, ...]] = field(default_factory=list)  # target ids, no bos/eos

    def watch(self, lines: Iterable[str]) -> Iterator[str]:
        """`lines` unchanged, keeping the first `n`."""
        for line in lines:
            if len(self.lines) < self.n:
                self.lines.append(line)
            yield line

    def record(self, tgt_ids: tuple[int, ...]) -> None:
        """The best translation of the next kept line (translations come in input order)."""
        if len(self.best) < len(self.lines):
            self.best.append(tgt_ids)


def teacher_forced_attention(
    model: Seq2SeqModel, src_ids: list[int], tgt_ids: list[int], *, device: torch.device
) -> Tensor:
    """Attention weights (T, S) of one sentence: T = len(tgt_ids) + 1 (the </s> step), S = len(src_ids).

    Raises NmtError when the model returns no attention weights.
    """
    src = torch.tensor([src_ids], dtype=torch.long, device=device)
    tgt_in = torch.tensor([[BOS_ID, *tgt_ids]], dtype=torch.long, device=device)
    takes_flag = "return_attention" in inspect.signature(model.forward).parameters  # type: ignore[attr-defined]
    if not takes_flag or getattr(model, "has_attention", True) is False:
        raise NmtError(NO_ATTENTION, hint=NO_ATTENTION_HINT)
    try:
        with torch.inference_mode():
            out = model(src, src == PAD_ID, tgt_in, return_attention=True)  # type: ignore[operator]
    except ValueError:  # a model family that cannot return weights says so with ValueError
        raise NmtError(NO_ATTENTION, hint=NO_ATTENTION_HINT) from None
    weights = out[1] if isinstance(out, tuple) and len(out) == 2 else None
    if weights is None:
        raise NmtError(NO_ATTENTION, hint=NO_ATTENTION_HINT)
    return weights[0].float().cpu()


def check_attention(model: Seq2SeqModel, *, device: torch.device) -> None:
    """NmtError now, before any translating, when the model cannot give attention weights."""
    teacher_forced_attention(model, [EOS_ID], [], device=device)


def write_heatmaps(
    loaded: LoadedModel,
    src_seqs: list[list[int]],
    best: list[tuple[int, ...]],
    directory: Path,
    *,
    device: torch.device,
) -> int:
    """One PNG per translated line, `directory/line_NNNNNN.png` (1-based line numbers); returns how many.

    Args:
        src_seqs: source ids of lines 1..N as translated (ending in eos; [] for an empty line, which is skipped).
        best: the best hypothesis ids of the same lines.
    """
    from nmt.plots import attention_heatmap

    vocab = loaded.vocab
    eos = vocab.tgt_piece_list([EOS_ID])[0]
    written = 0
    for lineno, (src_ids, tgt_ids) in enumerate(zip(src_seqs, best, strict=True), start=1):
        if not src_ids:
            continue
        weights = teacher_forced_attention(loaded.model, src_ids, list(tgt_ids), device=device)
        text = vocab.decode_tgt([list(tgt_ids)])[0]
        attention_heatmap(
            directory / f"line_{lineno:06d}.png",
            weights.tolist(),
            vocab.src_piece_list(src_ids),
            [*vocab.tgt_piece_list(list(tgt_ids)), eos],
            title=f"line {lineno}: {text[:80] + ('...' if len(text) > 80 else '')}",
        )
        written += 1
    skipped = len(src_seqs) - written
    info(f"{written} attention heatmaps -> {directory}" + (f" ({skipped} empty lines skipped)" if skipped else ""))
    return written
