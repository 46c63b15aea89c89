"""A tiny protocol-conforming GRU encoder-decoder with dot attention, for decoding tests.

`forward` runs the decoder GRU over the whole target at once, while `decode_step` runs it
one token at a time from the reordered state, so the two are independent code paths.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from nmt.tokens import PAD_ID


@dataclass
class ToyMemory:
    states: Tensor  # (B, S, D) encoder outputs, zero at padding
    src_pad: Tensor  # (B, S) True at padding

    def index_select(self, idx: Tensor) -> ToyMemory:
        return ToyMemory(self.states.index_select(0, idx), self.src_pad.index_select(0, idx))


@dataclass
class ToyState:
    hidden: Tensor  # (N, D) decoder GRU state
    keys: Tensor  # (N, S, D) attention keys, computed once from the memory

    def reorder(self, idx: Tensor, *, same_source: bool = False) -> ToyState:
        return ToyState(self.hidden.index_select(0, idx), self.keys.index_select(0, idx))


class ToySeq2Seq(nn.Module):
    """Embeddings + GRU encoder, GRU decoder with dot attention over the encoder states."""

    def __init__(self, vocab_size: int = 6, dim: int = 16, max_len: int = 16, logit_scale: float = 2.0) -> None:
        super().__init__()
        self.max_len = max_len
        self.logit_scale = logit_scale  # makes the random model's distributions peaked, as trained ones are
        self.src_emb = nn.Embedding(vocab_size, dim, padding_idx=PAD_ID)
        self.tgt_emb = nn.Embedding(vocab_size, dim, padding_idx=PAD_ID)
        self.encoder = nn.GRU(dim, dim, batch_first=True)
        self.decoder = nn.GRU(dim, dim, batch_first=True)
        self.bridge = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.out = nn.Linear(2 * dim, vocab_size, bias=False)  # no bias: outputs depend on the context
        nn.init.normal_(self.out.weight)

    def encode(self, src_ids: Tensor, src_pad: Tensor) -> ToyMemory:
        states, _ = self.encoder(self.src_emb(src_ids))  # left to right: padding on the right is harmless
        return ToyMemory(states.masked_fill(src_pad.unsqueeze(-1), 0.0), src_pad)

    def init_state(self, memory: ToyMemory, *, group: int = 1) -> ToyState:
        if group > 1:  # one row per beam: this toy's state holds per-row keys
            memory = memory.index_select(torch.arange(memory.src_pad.size(0)).repeat_interleave(group))
        count = (~memory.src_pad).sum(1, keepdim=True).clamp(min=1)
        mean = memory.states.sum(1) / count
        return ToyState(torch.tanh(self.bridge(mean)), self.key(memory.states))

    def _readout(self, dec_out: Tensor, keys: Tensor, memory: ToyMemory) -> Tensor:
        """(B, T, D) decoder outputs -> (B, T, V) logits."""
        weights = (dec_out @ keys.transpose(1, 2)).masked_fill(memory.src_pad.unsqueeze(1), float("-inf"))
        context = torch.softmax(weights, dim=-1) @ memory.states
        return self.logit_scale * self.out(torch.cat([dec_out, context], dim=-1))

    def forward(self, src_ids: Tensor, src_pad: Tensor, tgt_in: Tensor) -> Tensor:
        memory = self.encode(src_ids, src_pad)
        state = self.init_state(memory)
        dec_out, _ = self.decoder(self.tgt_emb(tgt_in), state.hidden.unsqueeze(0).contiguous())
        return self._readout(dec_out, state.keys, memory)

    def decode_step(self, tgt_last: Tensor, memory: ToyMemory, state: ToyState) -> tuple[Tensor, ToyState]:
        dec_out, hidden = self.decoder(self.tgt_emb(tgt_last), state.hidden.unsqueeze(0).contiguous())
        logits = self._readout(dec_out, state.keys, memory)[:, 0]
        return logits, ToyState(hidden[0], state.keys)
