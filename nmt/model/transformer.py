"""The Transformer encoder-decoder (Vaswani et al., 2017) behind the `Seq2SeqModel` protocol."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal, Self, overload

import torch
from torch import Tensor, nn

from nmt.config import ModelConfig
from nmt.model.attention import KVCache
from nmt.model.embeddings import Embeddings, TokenEmbedding, check_shareable
from nmt.model.layers import DecoderLayer, EncoderLayer, LayerSpec
from nmt.model.layout import Layout
from nmt.model.packing import Rows


@dataclass(frozen=True, slots=True)
class TransformerMemory:
    """Encoder output `out` (B, S, D) and its padding mask `src_pad` (B, S), True at padding."""

    out: Tensor
    src_pad: Tensor

    def index_select(self, idx: Tensor) -> Self:
        """Rows `idx` (N,) of the batch (repeat per beam, drop finished sentences)."""
        return type(self)(self.out.index_select(0, idx), self.src_pad.index_select(0, idx))


SELF_KV_CAPACITY = 16  # positions the self-attention K/V buffer starts with; doubled whenever it is full


def _buffer_view(spare: Tensor, shape: tuple[int, ...]) -> Tensor:
    """A contiguous `shape` view of the flat buffer `spare`, or of a new buffer when `spare` is too small."""
    size = math.prod(shape)
    return (spare if spare.numel() >= size else spare.new_empty(size))[:size].view(shape)


@dataclass(frozen=True, slots=True)
class TransformerState:
    """Incremental decoder state.

    The K/V of all decoder layers live in two buffers. The self-attention one is time-major
    and has room for more positions than are filled: a decoding step writes its position in
    place, and a beam reorder is one `index_select` of the filled positions into a spare
    buffer, which then swaps roles with the old one (likewise the cross-attention K/V when
    the batch shrinks). So no step copies the cache into freshly allocated memory, whose
    first touch costs more than the copy on CPU. Because buffers are reused, only the state
    returned by `decode_step` or `reorder` may be used afterwards.

    Attributes:
        self_kv: (C, B, layers, 2, H, Dh) self-attention keys (index 0) and values (1) per
            position; positions before `step` are filled, C >= step is the capacity.
        cross_kv: (B / group, layers, 2, H, S, Dh) cross-attention keys and values of each
            source sentence, computed once and shared by its `group` decoder rows.
        src_pad: (B / group, S) True at source padding.
        step: t, the number of tokens already fed (the next token sits at position t).
        self_spare, cross_spare: flat buffers that `reorder` writes into; replaced when too small.
        group: decoder rows per source sentence (the beam size in beam search), consecutive.
    """

    self_kv: Tensor
    cross_kv: Tensor
    src_pad: Tensor
    step: int
    self_spare: Tensor
    cross_spare: Tensor
    group: int = 1

    def layer_self_kv(self, layer: int, length: int) -> KVCache:
        """Views (B, H, length, Dh) of decoder layer `layer`'s self-attention K/V at positions < length."""
        return KVCache(*self.self_kv[:length, :, layer].permute(2, 1, 3, 0, 4))

    def layer_cross_kv(self, layer: int) -> KVCache:
        """Views (B, H, S, Dh) of decoder layer `layer`'s cross-attention K/V."""
        return KVCache(*self.cross_kv[:, layer].transpose(0, 1))

    def reorder(self, idx: Tensor, *, same_source: bool = False) -> Self:
        """Rows `idx` (N,) of every tensor: beam reordering, shrinking or expanding the batch.

        `same_source=True` promises that every row moves only among rows of the same source
        sentence (beam reordering without shrinking): the per-source cross-attention K/V and
        padding are then already right and are not copied. Otherwise every run of `group`
        consecutive entries of `idx` must come from one source sentence (whole sentences are
        kept or dropped), whose cross-attention K/V row is then `idx[j * group] // group`.
        """
        step, rows = self.step, idx.numel()
        capacity, batch = self.self_kv.shape[:2]
        self_kv = _buffer_view(self.self_spare, (capacity, rows, *self.self_kv.shape[2:]))
        # selecting (position, row) pairs along dim 0 takes ATen's parallel copy path; dim 1 does not
        pairs = (torch.arange(step, device=idx.device).unsqueeze(1) * batch + idx).view(-1)
        torch.index_select(self.self_kv.flatten(0, 1), 0, pairs, out=self_kv[:step].flatten(0, 1))
        if same_source:
            return type(self)(
                self_kv, self.cross_kv, self.src_pad, step, self.self_kv.view(-1), self.cross_spare, self.group
            )
        src_rows = idx if self.group == 1 else idx[:: self.group] // self.group
        cross_kv = _buffer_view(self.cross_spare, (src_rows.numel(), *self.cross_kv.shape[1:]))
        torch.index_select(self.cross_kv, 0, src_rows, out=cross_kv)
        src_pad = self.src_pad.index_select(0, src_rows)
        return type(self)(self_kv, cross_kv, src_pad, step, self.self_kv.view(-1), self.cross_kv.view(-1), self.group)


def alignment_layer(decoder_layers: int) -> int:
    """The decoder layer whose head-averaged cross-attention gives word alignments (`nmt translate
    --alignments`, `--format html`, and the CTranslate2 export's `return_attention`): the penultimate one
    (Garg et al. 2019), the one that agrees best with eflomal's links in BENCHMARKS.md; the only one of a
    one-layer decoder."""
    return max(decoder_layers - 2, 0)


class Transformer(nn.Module):
    """Encoder-decoder Transformer; build it from config with `from_config`.

    Args:
        share_embeddings: 'all' ties source embedding, target embedding and output projection
            (needs src_vocab_size == tgt_vocab_size); 'decoder' ties target embedding and output
            projection; 'none' ties nothing.
        max_len: longest source or target sequence (tokens incl. bos/eos).
        layout: an imported model's differences (position table layout, embedding scale, output
            bias, embedding LayerNorm; `nmt.model.layout`); the default is nmt's own.
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
        attention_dropout: float = 0.0,
        activation_dropout: float = 0.0,
        activation: Literal["relu", "gelu", "swish"] = "relu",
        norm: Literal["pre", "post"] = "pre",
        positions: Literal["sinusoidal", "learned"] = "sinusoidal",
        share_embeddings: Literal["all", "decoder", "none"] = "all",
        max_len: int = 256,
        layout: Layout = Layout(),
    ) -> None:
        super().__init__()
        check_shareable(share_embeddings, src_vocab_size, tgt_vocab_size)
        self.max_len = max_len
        self.layout = layout
        src_tokens = TokenEmbedding(src_vocab_size, d_model, scaled=layout.embed_scale)
        tgt_tokens = (
            src_tokens
            if share_embeddings == "all"
            else TokenEmbedding(tgt_vocab_size, d_model, scaled=layout.embed_scale)
        )
        table, norm_embed = layout.positions, layout.layernorm_embedding
        self.src_embed = Embeddings(
            src_tokens, max_len=max_len, positions=positions, dropout=dropout, table_layout=table, layernorm=norm_embed
        )
        self.tgt_embed = Embeddings(
            tgt_tokens, max_len=max_len, positions=positions, dropout=dropout, table_layout=table, layernorm=norm_embed
        )
        spec = LayerSpec(
            d_model, n_heads, ffn_dim, dropout, attention_dropout, activation_dropout, activation=activation, norm=norm
        )
        self.encoder = nn.ModuleList(EncoderLayer(spec) for _ in range(enc_layers))
        self.decoder = nn.ModuleList(DecoderLayer(spec) for _ in range(dec_layers))
        # Pre-norm leaves the residual stream unnormalised, so each stack ends with a LayerNorm.
        self.enc_norm: nn.Module = nn.LayerNorm(d_model) if norm == "pre" else nn.Identity()
        self.dec_norm: nn.Module = nn.LayerNorm(d_model) if norm == "pre" else nn.Identity()
        self.out_proj = nn.Linear(d_model, tgt_vocab_size, bias=layout.logits_bias)
        self._reset_parameters()
        if share_embeddings != "none":
            self.out_proj.weight = tgt_tokens.weight

    @classmethod
    def from_config(
        cls, cfg: ModelConfig, *, src_vocab_size: int, tgt_vocab_size: int, layout: Layout = Layout()
    ) -> Transformer:
        """The one place that reads `model.*` config."""
        return cls(
            src_vocab_size=src_vocab_size,
            tgt_vocab_size=tgt_vocab_size,
            d_model=cfg.d_model,
            n_heads=cfg.n_heads,
            ffn_dim=cfg.ffn_dim,
            enc_layers=cfg.enc_layers,
            dec_layers=cfg.dec_layers,
            dropout=cfg.dropout,
            attention_dropout=cfg.attention_dropout,
            activation_dropout=cfg.activation_dropout,
            activation=cfg.activation,
            norm=cfg.norm,
            positions=cfg.positions,
            share_embeddings=cfg.share_embeddings,
            max_len=cfg.max_len,
            layout=layout,
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
        self,
        tgt_in: Tensor,
        memory: TransformerMemory,
        *,
        need_weights: bool = False,
        keep: Tensor | None = None,
        weights_layer: int = -1,
        project: bool = True,
    ) -> tuple[Tensor, Tensor | None]:
        """Teacher-forced decoder: tgt_in (B, T) -> logits (B, T, V) and, if asked, the head-averaged
        cross-attention weights (B, T, S) of layer `weights_layer` (the last by default). With `keep` (flat indices into
        the B*T positions of each row's real prefix, as `nmt.data.batching.collate` builds them),
        the logits of those positions only, (N, V): padding never goes through the decoder's
        position-wise parts or the projection onto the vocabulary (`nmt.model.packing`). With
        `project=False`, the final-normed decoder states instead of the logits (what `out_proj` takes)."""
        x = self.tgt_embed(tgt_in)
        rows = None if keep is None else Rows(keep, *tgt_in.shape)
        if rows is not None:  # the real positions only, from here to the logits (nmt.model.packing)
            x = rows.pack(x)
        weights = None
        wanted = weights_layer % len(self.decoder)
        for i, layer in enumerate(self.decoder):
            cross_kv = layer.cross_kv(memory.out)
            x, w = layer(x, cross_kv, src_pad=memory.src_pad, need_weights=need_weights and i == wanted, rows=rows)
            weights = w if i == wanted else weights
        x = self.dec_norm(x)
        return (self.out_proj(x) if project else x), weights

    @overload
    def forward(
        self,
        src_ids: Tensor,
        src_pad: Tensor,
        tgt_in: Tensor,
        *,
        return_attention: Literal[False] = False,
        keep: Tensor | None = None,
        attention_layer: int = -1,
        project: bool = True,
    ) -> Tensor: ...
    @overload
    def forward(
        self,
        src_ids: Tensor,
        src_pad: Tensor,
        tgt_in: Tensor,
        *,
        return_attention: Literal[True],
        keep: Tensor | None = None,
        attention_layer: int = -1,
        project: bool = True,
    ) -> tuple[Tensor, Tensor]: ...
    def forward(
        self,
        src_ids: Tensor,
        src_pad: Tensor,
        tgt_in: Tensor,
        *,
        return_attention: bool = False,
        keep: Tensor | None = None,
        attention_layer: int = -1,
        project: bool = True,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Teacher-forced logits (B, T, V) for source (B, S) and decoder input `tgt_in` (B, T);
        with `keep` (flat indices (N,) into the B*T positions), those rows only: (N, V); with
        `project=False`, the states `out_proj` would take instead (D wide).

        With `return_attention`, also decoder layer `attention_layer`'s cross-attention weights
        (B, T, S), averaged over heads (the last layer's by default; `alignment_layer` for word alignments).
        """
        memory = self.encode(src_ids, src_pad)
        logits, weights = self.decode(
            tgt_in, memory, need_weights=return_attention, keep=keep, weights_layer=attention_layer, project=project
        )
        if return_attention:
            assert weights is not None
            return logits, weights
        return logits

    def init_state(self, memory: TransformerMemory, *, group: int = 1) -> TransformerState:
        """Empty decoder state with `group` rows per sentence of `memory`; cross-attention K/V are
        computed here, once per sentence (not per row)."""
        kvs = [layer.cross_kv(memory.out) for layer in self.decoder]
        cross_kv = torch.stack([t for kv in kvs for t in (kv.k, kv.v)], dim=1).unflatten(1, (len(kvs), 2))
        batch, layers, _, heads, _, head_dim = cross_kv.shape
        self_kv = cross_kv.new_empty(SELF_KV_CAPACITY, batch * group, layers, 2, heads, head_dim)
        empty = cross_kv.new_empty(0)
        return TransformerState(self_kv, cross_kv, memory.src_pad, 0, empty, empty, group)

    def decode_step(
        self, tgt_last: Tensor, memory: TransformerMemory, state: TransformerState
    ) -> tuple[Tensor, TransformerState]:
        """Feed the last tokens (B, 1) at position `state.step`: logits (B, V) and the grown state.

        `memory` is not read: the state already holds the cross-attention K/V and `src_pad`.
        """
        step = state.step
        if step == state.self_kv.size(0):  # the buffer is full: double it (amortised O(1) per step)
            grown = state.self_kv.new_empty(2 * step, *state.self_kv.shape[1:])
            grown[:step] = state.self_kv
            state = dataclasses.replace(state, self_kv=grown)
        x = self.tgt_embed(tgt_last, offset=step)
        for i, layer in enumerate(self.decoder):
            self_kv, cross_kv = state.layer_self_kv(i, step + 1), state.layer_cross_kv(i)
            x = layer.step(x, self_kv=self_kv, cross_kv=cross_kv, src_pad=state.src_pad, group=state.group)
        logits = self.out_proj(self.dec_norm(x)).squeeze(1)
        return logits, dataclasses.replace(state, step=step + 1)
