"""The Transformer encoder-decoder (Vaswani et al., 2017) behind the `Seq2SeqModel` protocol."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Self, overload

import torch
from torch import Tensor, nn

from nmt.config import ModelConfig
from nmt.model.attention import KVCache
from nmt.model.embeddings import Embeddings, TokenEmbedding
from nmt.model.layers import DecoderLayer, EncoderLayer


@dataclass(frozen=True, slots=True)
class TransformerMemory:
    """Encoder output `out` (B, S, D) and its padding mask `src_pad` (B, S), True at padding."""

    out: Tensor
    src_pad: Tensor

    def index_select(self, idx: Tensor) -> Self:
        """Rows `idx` (N,) of the batch (repeat per beam, drop finished sentences)."""
        return type(self)(self.out.index_select(0, idx), self.src_pad.index_select(0, idx))


@dataclass(frozen=True, slots=True)
class TransformerState:
    """Incremental decoder state.

    Attributes:
        self_kv: per decoder layer, self-attention K/V (B, H, t, Dh), one position per token fed.
        cross_kv: per decoder layer, cross-attention K/V (B, H, S, Dh), computed once.
        src_pad: (B, S) True at source padding.
        step: t, the number of tokens already fed (the next token sits at position t).
    """

    self_kv: tuple[KVCache, ...]
    cross_kv: tuple[KVCache, ...]
    src_pad: Tensor
    step: int

    def reorder(self, idx: Tensor, *, same_source: bool = False) -> Self:
        """Rows `idx` (N,) of every tensor: beam reordering, shrinking or expanding the batch.

        `same_source=True` promises that every row moves only among rows of the same source
        sentence (beam reordering without shrinking): the per-source cross-attention K/V and
        padding are then already right and are not copied.
        """
        if same_source:
            return type(self)(
                tuple(kv.index_select(idx) for kv in self.self_kv), self.cross_kv, self.src_pad, self.step
            )
        return type(self)(
            tuple(kv.index_select(idx) for kv in self.self_kv),
            tuple(kv.index_select(idx) for kv in self.cross_kv),
            self.src_pad.index_select(0, idx),
            self.step,
        )


class Transformer(nn.Module):
    """Encoder-decoder Transformer; build it from config with `from_config`.

    Args:
        share_embeddings: 'all' ties source embedding, target embedding and output projection
            (needs src_vocab_size == tgt_vocab_size); 'decoder' ties target embedding and output
            projection; 'none' ties nothing.
        max_len: longest source or target sequence (tokens incl. bos/eos).
    """

    def __init__(
        self,
        *,
        src_vocab_size: int,
        tgt_vocab_size: int,
        d_model: int,
        n_heads: int,
        ffn_dim: int,
        enc_layers: int,
        dec_layers: int,
        dropout: float,
        activation: Literal["relu", "gelu"] = "relu",
        norm: Literal["pre", "post"] = "pre",
        positions: Literal["sinusoidal", "learned"] = "sinusoidal",
        share_embeddings: Literal["all", "decoder", "none"] = "all",
        max_len: int = 256,
    ) -> None:
        super().__init__()
        if share_embeddings == "all" and src_vocab_size != tgt_vocab_size:
            raise ValueError(
                f"share_embeddings='all' needs one vocabulary for both sides, but the source has "
                f"{src_vocab_size} entries and the target {tgt_vocab_size}; use a joint vocabulary "
                f"or share_embeddings='decoder'/'none'"
            )
        self.max_len = max_len
        src_tokens = TokenEmbedding(src_vocab_size, d_model)
        tgt_tokens = src_tokens if share_embeddings == "all" else TokenEmbedding(tgt_vocab_size, d_model)
        self.src_embed = Embeddings(src_tokens, max_len=max_len, positions=positions, dropout=dropout)
        self.tgt_embed = Embeddings(tgt_tokens, max_len=max_len, positions=positions, dropout=dropout)
        layer_args = (d_model, n_heads, ffn_dim, dropout)
        self.encoder = nn.ModuleList(
            EncoderLayer(*layer_args, activation=activation, norm=norm) for _ in range(enc_layers)
        )
        self.decoder = nn.ModuleList(
            DecoderLayer(*layer_args, activation=activation, norm=norm) for _ in range(dec_layers)
        )
        # Pre-norm leaves the residual stream unnormalised, so each stack ends with a LayerNorm.
        self.enc_norm: nn.Module = nn.LayerNorm(d_model) if norm == "pre" else nn.Identity()
        self.dec_norm: nn.Module = nn.LayerNorm(d_model) if norm == "pre" else nn.Identity()
        self.out_proj = nn.Linear(d_model, tgt_vocab_size, bias=False)
        self._reset_parameters()
        if share_embeddings != "none":
            self.out_proj.weight = tgt_tokens.weight

    @classmethod
    def from_config(cls, cfg: ModelConfig, *, src_vocab_size: int, tgt_vocab_size: int) -> Transformer:
        """The one place that reads `model.*` config."""
        assert cfg.d_model and cfg.n_heads and cfg.ffn_dim and cfg.enc_layers and cfg.dec_layers
        assert cfg.dropout is not None
        return cls(
            src_vocab_size=src_vocab_size,
            tgt_vocab_size=tgt_vocab_size,
            d_model=cfg.d_model,
            n_heads=cfg.n_heads,
            ffn_dim=cfg.ffn_dim,
            enc_layers=cfg.enc_layers,
            dec_layers=cfg.dec_layers,
            dropout=cfg.dropout,
            activation=cfg.activation,
            norm=cfg.norm,
            positions=cfg.positions,
            share_embeddings=cfg.share_embeddings,
            max_len=cfg.max_len,
        )

    def _reset_parameters(self) -> None:
        """Xavier-uniform linear layers with zero biases; embeddings normal(0, D**-0.5).

        The untied output projection is initialised like an embedding, so that tying changes
        nothing about the initial logits' scale.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.out_proj.weight, mean=0.0, std=self.out_proj.in_features**-0.5)
        for module in self.modules():
            if isinstance(module, TokenEmbedding):
                module.reset_parameters()

    def encode(self, src_ids: Tensor, src_pad: Tensor) -> TransformerMemory:
        """Source ids (B, S) and padding mask (B, S) -> memory with `out` (B, S, D)."""
        x = self.src_embed(src_ids)
        for layer in self.encoder:
            x = layer(x, src_pad=src_pad)
        return TransformerMemory(self.enc_norm(x), src_pad)

    def decode(
        self, tgt_in: Tensor, memory: TransformerMemory, *, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Teacher-forced decoder: tgt_in (B, T) -> logits (B, T, V) and, if asked, the last
        layer's head-averaged cross-attention weights (B, T, S)."""
        x = self.tgt_embed(tgt_in)
        weights = None
        last = len(self.decoder) - 1
        for i, layer in enumerate(self.decoder):
            cross_kv = layer.cross_kv(memory.out)
            x, weights = layer(x, cross_kv, src_pad=memory.src_pad, need_weights=need_weights and i == last)
        return self.out_proj(self.dec_norm(x)), weights

    @overload
    def forward(
        self, src_ids: Tensor, src_pad: Tensor, tgt_in: Tensor, *, return_attention: Literal[False] = False
    ) -> Tensor: ...
    @overload
    def forward(
        self, src_ids: Tensor, src_pad: Tensor, tgt_in: Tensor, *, return_attention: Literal[True]
    ) -> tuple[Tensor, Tensor]: ...
    def forward(
        self, src_ids: Tensor, src_pad: Tensor, tgt_in: Tensor, *, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Teacher-forced logits (B, T, V) for source (B, S) and decoder input `tgt_in` (B, T).

        With `return_attention`, also the last decoder layer's cross-attention weights
        (B, T, S), averaged over heads.
        """
        logits, weights = self.decode(tgt_in, self.encode(src_ids, src_pad), need_weights=return_attention)
        if return_attention:
            assert weights is not None
            return logits, weights
        return logits

    def init_state(self, memory: TransformerMemory) -> TransformerState:
        """Empty decoder state for `memory`; cross-attention K/V are computed here, once."""
        batch, dtype, device = memory.out.size(0), memory.out.dtype, memory.out.device
        self_kv = []
        for layer in self.decoder:
            attn = layer.self_attn
            empty = torch.zeros(batch, attn.n_heads, 0, attn.head_dim, dtype=dtype, device=device)
            self_kv.append(KVCache(empty, empty))
        cross_kv = tuple(layer.cross_kv(memory.out) for layer in self.decoder)
        return TransformerState(tuple(self_kv), cross_kv, memory.src_pad, 0)

    def decode_step(
        self, tgt_last: Tensor, memory: TransformerMemory, state: TransformerState
    ) -> tuple[Tensor, TransformerState]:
        """Feed the last tokens (B, 1) at position `state.step`: logits (B, V) and the grown state.

        `memory` is not read: the state already holds the cross-attention K/V and `src_pad`.
        """
        x = self.tgt_embed(tgt_last, offset=state.step)
        self_kv = []
        for layer, kv, cross_kv in zip(self.decoder, state.self_kv, state.cross_kv, strict=True):
            x, kv = layer.step(x, self_kv=kv, cross_kv=cross_kv, src_pad=state.src_pad)
            self_kv.append(kv)
        logits = self.out_proj(self.dec_norm(x)).squeeze(1)
        return logits, TransformerState(tuple(self_kv), state.cross_kv, state.src_pad, state.step + 1)
