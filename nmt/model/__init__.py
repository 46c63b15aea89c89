"""Model families behind one small protocol, so training and decoding never branch on them.

Token ids are those of `nmt.tokens`. Masks named `*_pad` are True at padding.
"""

from __future__ import annotations

from typing import Protocol, Self

import torch
from torch import Tensor

from nmt.config import ModelConfig
from nmt.model.layout import Layout


class Memory(Protocol):
    """Encoder output for a batch; `index_select` picks/repeats rows (beams, shrinking)."""

    src_pad: Tensor  # (B, S) True at padding

    def index_select(self, idx: Tensor) -> Self: ...


class DecoderState(Protocol):
    """Incremental decoder state (e.g. per-layer K/V); `reorder` gathers rows by `idx` (N,).

    `same_source=True` means rows only move among hypotheses of one source sentence, so
    per-source parts of the state (cross-attention K/V) may be left as they are. A state
    made with `init_state(..., group=K)` is reordered by whole groups: each run of K entries
    of `idx` comes from one source sentence.
    """

    def reorder(self, idx: Tensor, *, same_source: bool = False) -> Self: ...


class Seq2SeqModel(Protocol):
    """What training and decoding need from any model family."""

    max_len: int  # longest sequence (tokens incl. bos/eos) the model accepts per side

    def encode(self, src_ids: Tensor, src_pad: Tensor) -> Memory:
        """(B, S) ids and padding mask -> encoder memory."""
        ...

    out_proj: torch.nn.Linear  # the projection onto the target vocabulary, the model's last layer

    def forward(
        self, src_ids: Tensor, src_pad: Tensor, tgt_in: Tensor, *, keep: Tensor | None = None, project: bool = True
    ) -> Tensor:
        """Teacher-forced logits (B, T, V) for decoder input `tgt_in` (B, T); with `keep`, flat
        indices (N,) into the B*T positions (training: the non-pad ones, a prefix of each row), only
        those rows: (N, V); positions outside `keep` may then be skipped throughout the decoder.
        With `project=False`, what `out_proj` would be applied to: (B, T, D) or (N, D) (the
        training step projects and scores them in one, `nmt.train.loss.projected_nll`)."""
        ...

    def init_state(self, memory: Memory, *, group: int = 1) -> DecoderState:
        """Empty decoder state with `group` consecutive rows per row of `memory` (the beams of
        a sentence); cross-attention K/V are computed here, once per sentence. The state's
        `reorder` then keeps or drops whole groups (see `DecoderState`)."""
        ...

    def decode_step(self, tgt_last: Tensor, memory: Memory, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """One decoding time step: last tokens (B, 1) -> logits (B, V) and the grown state."""
        ...


def build_model(
    cfg: ModelConfig, *, src_vocab_size: int, tgt_vocab_size: int, layout: Layout | None = None
) -> Seq2SeqModel:
    """The only place that reads `model.*` config: build the family named by `cfg.arch`.

    `layout`: an imported Transformer's differences from nmt's own (`nmt.model.layout`; a
    checkpoint's "layout", see `nmt.checkpoint.checkpoint_layout`)."""
    layout = layout or Layout()
    if cfg.arch == "rnn":
        from nmt.model.recurrent import RNNSeq2Seq

        if layout != Layout():
            raise ValueError("a recurrent model has no imported layout")
        return RNNSeq2Seq.from_config(cfg, src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size)
    from nmt.model.transformer import Transformer

    return Transformer.from_config(cfg, src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size, layout=layout)
