"""Recurrent encoder-decoders (LSTM/GRU) of the seq2seq lineage behind the `Seq2SeqModel` protocol.

One class covers the family, chosen by `attention`:
  - none:          Sutskever et al. 2014. The decoder sees the source only through its
                   initial state, a bridge (linear + tanh) from the encoder's final states.
  - bahdanau:      Bahdanau et al. 2014. Additive attention queried with the previous
                   decoder state; the context is an input of the recurrent step, and the
                   output layer reads [state; context; embedding].
  - luong_dot/luong_general: Luong et al. 2015. The recurrent step runs first, then dot or
                   bilinear ("general") attention with the new state, and the attentional
                   vector h~ = tanh(W_c [context; state]) predicts the token; with
                   `input_feeding`, h~ is also an input of the next step.
Stacked layers get GNMT-style residual connections from the third layer on (`residual`).

The encoder runs `nn.LSTM`/`nn.GRU` layer by layer over packed sequences, so padding never
reaches the outputs or the final states. The decoder is one `_decode` routine used by both
teacher forcing and incremental decoding: when a step depends on the previous step's
output (Bahdanau's query, input feeding) it loops over time one step at a time, otherwise
the recurrent stack runs over the whole sequence at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Self

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nmt.config import ModelConfig
from nmt.model.embeddings import check_shareable
from nmt.model.packing import select_rows

Cell = Literal["lstm", "gru"]
Attention = Literal["none", "bahdanau", "luong_dot", "luong_general"]
RESIDUAL_FROM = 2  # 0-based index of the first layer with a residual connection (GNMT: the third)


@dataclass(frozen=True, slots=True)
class RNNMemory:
    """Encoder output and what the decoder needs from it.

    Attributes:
        out: (B, S, D) encoder states, zero at padding.
        src_pad: (B, S) True at padding.
        keys: (B, S, D) attention keys computed once (W_k out for bahdanau, W_a out for
            luong_general, `out` itself for luong_dot); None without attention.
        final_h: (L_enc, B, D) each encoder layer's final state (both directions concatenated).
        final_c: (L_enc, B, D) the LSTM cells' final states; None for GRU.
    """

    out: Tensor
    src_pad: Tensor
    keys: Tensor | None
    final_h: Tensor
    final_c: Tensor | None

    def index_select(self, idx: Tensor) -> Self:
        """Rows `idx` (N,) of the batch (repeat per beam, drop finished sentences)."""
        return type(self)(
            self.out.index_select(0, idx),
            self.src_pad.index_select(0, idx),
            None if self.keys is None else self.keys.index_select(0, idx),
            self.final_h.index_select(1, idx),
            None if self.final_c is None else self.final_c.index_select(1, idx),
        )


@dataclass(frozen=True, slots=True)
class RNNState:
    """Incremental decoder state: per-layer hidden `h` and cell `c` (L, B, D), input feed (B, D)."""

    h: Tensor
    c: Tensor | None  # None for GRU
    feed: Tensor | None  # last attentional vector, with input feeding (and for Bahdanau's output)

    def reorder(self, idx: Tensor, *, same_source: bool = False) -> Self:
        """Rows `idx` (N,) of every tensor. Nothing here is per source, so `same_source` changes nothing."""
        return type(self)(
            self.h.index_select(1, idx),
            None if self.c is None else self.c.index_select(1, idx),
            None if self.feed is None else self.feed.index_select(0, idx),
        )


class GlobalAttention(nn.Module):
    """Attention over all encoder states: additive (Bahdanau) or dot / bilinear (Luong)."""

    def __init__(self, kind: Attention, dim: int) -> None:
        super().__init__()
        self.kind = kind
        self.key_proj = nn.Linear(dim, dim, bias=kind == "bahdanau") if kind != "luong_dot" else None
        self.query_proj = nn.Linear(dim, dim, bias=False) if kind == "bahdanau" else None
        self.score_proj = nn.Linear(dim, 1, bias=False) if kind == "bahdanau" else None

    def keys(self, out: Tensor) -> Tensor:
        """Keys (B, S, D) for encoder states `out`, computed once per source."""
        return out if self.key_proj is None else self.key_proj(out)

    def forward(self, query: Tensor, memory: RNNMemory) -> tuple[Tensor, Tensor]:
        """Queries (B, T, D) -> contexts (B, T, D) and attention weights (B, T, S)."""
        assert memory.keys is not None
        if self.kind == "bahdanau":
            assert self.query_proj is not None and self.score_proj is not None
            hidden = torch.tanh(memory.keys.unsqueeze(1) + self.query_proj(query).unsqueeze(2))  # (B, T, S, D)
            scores = self.score_proj(hidden).squeeze(-1)
        else:
            scores = query @ memory.keys.transpose(1, 2)
        scores = scores.masked_fill(memory.src_pad.unsqueeze(1), float("-inf"))
        weights = scores.softmax(dim=-1)
        return weights @ memory.out, weights


def _stack(cell: Cell, input_size: int, hidden: int, layers: int, *, bidirectional: bool = False) -> nn.ModuleList:
    """One single-layer RNN module per layer, so residual connections and dropout can sit between them."""
    rnn = nn.LSTM if cell == "lstm" else nn.GRU
    width = hidden * (2 if bidirectional else 1)
    return nn.ModuleList(
        rnn(input_size if i == 0 else width, hidden, batch_first=True, bidirectional=bidirectional)
        for i in range(layers)
    )


class RNNSeq2Seq(nn.Module):
    """Recurrent encoder-decoder; build it from config with `from_config`.

    Args:
        d_model: embedding size and hidden size (a bidirectional encoder has d_model / 2 per direction).
        share_embeddings: as for the Transformer ('all', 'decoder', 'none').
        max_len: longest source or target sequence (tokens incl. bos/eos).
    """

    def __init__(
        self,
        *,
        src_vocab_size: int,
        tgt_vocab_size: int,
        d_model: int,
        enc_layers: int,
        dec_layers: int,
        dropout: float,
        cell: Cell = "lstm",
        bidirectional: bool = True,
        attention: Attention = "luong_general",
        input_feeding: bool = True,
        residual: bool = True,
        share_embeddings: Literal["all", "decoder", "none"] = "all",
        max_len: int = 256,
    ) -> None:
        super().__init__()
        check_shareable(share_embeddings, src_vocab_size, tgt_vocab_size)
        if input_feeding and attention == "none":
            raise ValueError("input_feeding needs attention")
        self.max_len, self.cell, self.attention_kind = max_len, cell, attention
        self.input_feeding, self.residual = input_feeding, residual
        self.src_embed = nn.Embedding(src_vocab_size, d_model)
        self.tgt_embed = self.src_embed if share_embeddings == "all" else nn.Embedding(tgt_vocab_size, d_model)
        self.dropout = nn.Dropout(dropout)
        half = d_model // 2 if bidirectional else d_model
        self.encoder = _stack(cell, d_model, half, enc_layers, bidirectional=bidirectional)
        self.bridge_h = nn.Linear(d_model, d_model)
        self.bridge_c = nn.Linear(d_model, d_model) if cell == "lstm" else None
        dec_input = d_model * (1 + int(attention == "bahdanau") + int(input_feeding))
        self.decoder = _stack(cell, dec_input, d_model, dec_layers)
        self.attention = GlobalAttention(attention, d_model) if attention != "none" else None
        combine_in = {"none": 0, "bahdanau": 3 * d_model}.get(attention, 2 * d_model)
        self.combine = nn.Linear(combine_in, d_model, bias=False) if combine_in else None
        self.out_proj = nn.Linear(d_model, tgt_vocab_size, bias=False)
        for param in self.parameters():  # Luong et al. / OpenNMT: uniform in [-0.1, 0.1]
            nn.init.uniform_(param, -0.1, 0.1)
        if share_embeddings != "none":
            self.out_proj.weight = self.tgt_embed.weight
        # A step that needs the previous step's output (query or feed) cannot run over all positions at once.
        self.step_by_step = attention == "bahdanau" or input_feeding

    @classmethod
    def from_config(cls, cfg: ModelConfig, *, src_vocab_size: int, tgt_vocab_size: int) -> RNNSeq2Seq:
        """The one place that reads `model.*` config for this family."""
        return cls(
            src_vocab_size=src_vocab_size,
            tgt_vocab_size=tgt_vocab_size,
            d_model=cfg.d_model,
            enc_layers=cfg.enc_layers,
            dec_layers=cfg.dec_layers,
            dropout=cfg.dropout,
            cell=cfg.cell,
            bidirectional=cfg.bidirectional,
            attention=cfg.attention,
            input_feeding=bool(cfg.input_feeding),
            residual=cfg.residual,
            share_embeddings=cfg.share_embeddings,
            max_len=cfg.max_len,
        )

    @property
    def has_attention(self) -> bool:
        """Whether the decoder attends to the source (False for the Sutskever model)."""
        return self.attention is not None

    def encode(self, src_ids: Tensor, src_pad: Tensor) -> RNNMemory:
        """Source ids (B, S) and padding mask (B, S) -> memory; padding is packed away in every layer."""
        batch, src_len = src_ids.shape
        # host sync, once per batch: packing needs the lengths on the CPU; an empty row keeps 1 (padding) token
        lengths = (~src_pad).sum(1).clamp(min=1).cpu()
        x = self.dropout(self.src_embed(src_ids))
        finals_h, finals_c = [], []
        for i, rnn in enumerate(self.encoder):
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            out_packed, final = rnn(packed)
            out, _ = pad_packed_sequence(out_packed, batch_first=True, total_length=src_len)
            h, c = final if self.cell == "lstm" else (final, None)
            finals_h.append(self._join_directions(h))
            if c is not None:
                finals_c.append(self._join_directions(c))
            if self.residual and i >= RESIDUAL_FROM:
                out = out + x
            x = self.dropout(out) if i < len(self.encoder) - 1 else out
        keys = None if self.attention is None else self.attention.keys(x)
        final_c = torch.stack(finals_c) if finals_c else None
        return RNNMemory(x, src_pad, keys, torch.stack(finals_h), final_c)

    @staticmethod
    def _join_directions(state: Tensor) -> Tensor:
        """(directions, B, H) -> (B, directions * H)."""
        return state.transpose(0, 1).flatten(1)

    def init_state(self, memory: RNNMemory, *, group: int = 1) -> RNNState:
        """Decoder start state: the bridge of the encoder's final states (layer by layer when the
        depths match, else the top encoder layer's for every decoder layer); a zero input feed.
        With `group` > 1, each sentence's state is repeated for its `group` rows (the attention
        reads the memory rows `decode_step` is given, one per row)."""
        if group > 1:
            memory = memory.index_select(
                torch.arange(memory.src_pad.size(0), device=memory.src_pad.device).repeat_interleave(group)
            )
        layers = len(self.decoder)

        def per_layer(final: Tensor) -> Tensor:
            return final if final.size(0) == layers else final[-1:].expand(layers, -1, -1)

        h = torch.tanh(self.bridge_h(per_layer(memory.final_h)))
        c = None
        if self.bridge_c is not None:
            assert memory.final_c is not None
            c = self.bridge_c(per_layer(memory.final_c))
        feed = memory.out.new_zeros(memory.out.size(0), memory.out.size(2)) if self.input_feeding else None
        return RNNState(h.contiguous(), None if c is None else c.contiguous(), feed)

    def _recur(self, x: Tensor, state: RNNState) -> tuple[Tensor, Tensor, Tensor | None]:
        """The decoder's recurrent stack over inputs (B, T, Din): top outputs (B, T, D) and final h, c."""
        hs, cs = [], []
        last = len(self.decoder) - 1
        for i, rnn in enumerate(self.decoder):
            if state.c is not None:
                out, (h, c) = rnn(x, (state.h[i : i + 1], state.c[i : i + 1]))
                cs.append(c)
            else:
                out, h = rnn(x, state.h[i : i + 1])
            hs.append(h)
            if self.residual and i >= RESIDUAL_FROM:
                out = out + x
            x = self.dropout(out) if i < last else out
        return x, torch.cat(hs), torch.cat(cs) if cs else None

    def _decode(
        self, emb: Tensor, memory: RNNMemory, state: RNNState, *, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None, RNNState]:
        """Embedded decoder inputs (B, T, D) -> attentional vectors (B, T, D), weights (B, T, S), new state."""
        if self.step_by_step and emb.size(1) > 1:
            outs, weights = [], []
            for t in range(emb.size(1)):
                out, w, state = self._decode(emb[:, t : t + 1], memory, state, need_weights=need_weights)
                outs.append(out)
                weights.append(w)
            return torch.cat(outs, 1), torch.cat(weights, 1) if need_weights else None, state  # type: ignore[arg-type]
        x, context, weights = emb, None, None
        if self.attention_kind == "bahdanau":
            assert self.attention is not None
            context, weights = self.attention(state.h[-1].unsqueeze(1), memory)  # query: the previous state
            x = torch.cat([x, context], -1)
        if self.input_feeding:
            assert state.feed is not None
            x = torch.cat([x, state.feed.unsqueeze(1)], -1)
        top, h, c = self._recur(x, state)
        if self.attention_kind == "bahdanau":
            assert self.combine is not None and context is not None
            out = torch.tanh(self.combine(torch.cat([top, context, emb], -1)))
        elif self.attention is not None:
            assert self.combine is not None
            context, weights = self.attention(top, memory)
            out = torch.tanh(self.combine(torch.cat([context, top], -1)))
        else:
            out = top
        feed = out[:, -1] if self.input_feeding else None
        return out, weights if need_weights else None, RNNState(h, c, feed)

    def forward(
        self,
        src_ids: Tensor,
        src_pad: Tensor,
        tgt_in: Tensor,
        *,
        return_attention: bool = False,
        keep: Tensor | None = None,
        project: bool = True,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Teacher-forced logits (B, T, V) for source (B, S) and decoder input `tgt_in` (B, T); with
        `keep` (flat indices (N,) into the B*T positions), those rows only: (N, V); with
        `project=False`, the states `out_proj` would take instead (D wide).

        With `return_attention`, also the attention weights (B, T, S); a model without
        attention raises ValueError.
        """
        if return_attention and self.attention is None:
            raise ValueError("this model has no attention (model.attention: none), so there are no weights to return")
        memory = self.encode(src_ids, src_pad)
        out, weights, _ = self._decode(
            self.dropout(self.tgt_embed(tgt_in)), memory, self.init_state(memory), need_weights=return_attention
        )
        states = select_rows(self.dropout(out), keep)
        logits = self.out_proj(states) if project else states
        if return_attention:
            assert weights is not None
            return logits, weights
        return logits

    def decode_step(self, tgt_last: Tensor, memory: RNNMemory, state: RNNState) -> tuple[Tensor, RNNState]:
        """Feed the last tokens (B, 1): logits (B, V) and the next state."""
        out, _, state = self._decode(self.dropout(self.tgt_embed(tgt_last)), memory, state)
        return self.out_proj(self.dropout(out)).squeeze(1), state
