"""Feed-forward block and Transformer encoder/decoder layers, with pre- or post-LayerNorm.

Pre-norm: x + Dropout(F(LN(x))), and the stack ends with a final LayerNorm (stable for
deep models). Post-norm: LN(x + Dropout(F(x))), as in the paper.

Three dropouts, as fairseq names them: `dropout` on every sublayer's output (and on the
embeddings, in `nmt.model.embeddings`), `attention_dropout` on the attention weights, and
`activation_dropout` after the FFN non-linearity. Only `dropout` is on by default (Vaswani
et al.); the big preset adds attention dropout 0.1 (fairseq's transformer_wmt_en_de_big).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from nmt.model.attention import KVCache, MultiHeadAttention
from nmt.model.packing import Rows


@dataclass(frozen=True)
class LayerSpec:
    """The sizes and switches every encoder and decoder layer of one model shares."""

    d_model: int
    n_heads: int
    ffn_dim: int
    dropout: float = 0.0  # on sublayer outputs
    attention_dropout: float = 0.0  # on attention weights
    activation_dropout: float = 0.0  # after the FFN non-linearity
    activation: Literal["relu", "gelu", "swish"] = "relu"
    norm: Literal["pre", "post"] = "pre"


class FeedForward(nn.Module):
    """Position-wise Linear(D, F) -> activation -> dropout -> Linear(F, D): (B, T, D) -> (B, T, D)."""

    def __init__(
        self, d_model: int, ffn_dim: int, dropout: float, *, activation: Literal["relu", "gelu", "swish"] = "relu"
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, d_model)
        self.activation = {"relu": nn.ReLU, "gelu": nn.GELU, "swish": nn.SiLU}[activation]()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.dropout(self.activation(self.fc1(x))))


class _Residual(nn.Module):
    """The sublayers of a layer and their residual wiring: `_in` gives a sublayer's input, `_out`
    adds its output back. Sublayers are created in execution order (self-attention, cross-attention
    when `cross`, FFN), which fixes the order of parameter initialisation."""

    def __init__(self, spec: LayerSpec, *, cross: bool) -> None:
        super().__init__()
        self.norm_first = spec.norm == "pre"
        self.dropout = nn.Dropout(spec.dropout)
        self.self_attn = MultiHeadAttention(spec.d_model, spec.n_heads, spec.attention_dropout)
        self.self_attn_norm = nn.LayerNorm(spec.d_model)
        if cross:
            self.cross_attn = MultiHeadAttention(spec.d_model, spec.n_heads, spec.attention_dropout)
            self.cross_attn_norm = nn.LayerNorm(spec.d_model)
        self.ffn = FeedForward(spec.d_model, spec.ffn_dim, spec.activation_dropout, activation=spec.activation)
        self.ffn_norm = nn.LayerNorm(spec.d_model)

    def _in(self, x: Tensor, norm: nn.LayerNorm) -> Tensor:
        return norm(x) if self.norm_first else x

    def _out(self, x: Tensor, y: Tensor, norm: nn.LayerNorm) -> Tensor:
        x = x + self.dropout(y)
        return x if self.norm_first else norm(x)


class EncoderLayer(_Residual):
    """Self-attention then feed-forward: (B, S, D) -> (B, S, D)."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec, cross=False)

    def forward(self, x: Tensor, *, src_pad: Tensor) -> Tensor:
        """x (B, S, D), src_pad (B, S) True at padding -> (B, S, D)."""
        h = self._in(x, self.self_attn_norm)
        y, _ = self.self_attn(h, h, key_pad=src_pad)
        x = self._out(x, y, self.self_attn_norm)
        return self._out(x, self.ffn(self._in(x, self.ffn_norm)), self.ffn_norm)


class DecoderLayer(_Residual):
    """Causal self-attention, cross-attention to the encoder, feed-forward: (B, T, D) -> (B, T, D)."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec, cross=True)

    def cross_kv(self, memory_out: Tensor) -> KVCache:
        """Cross-attention keys/values (B, H, S, Dh) from encoder output (B, S, D)."""
        return self.cross_attn.project_kv(memory_out)

    def forward(
        self,
        x: Tensor,
        cross_kv: KVCache,
        *,
        src_pad: Tensor,
        need_weights: bool = False,
        rows: Rows | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Teacher-forced pass over the whole target.

        Args:
            x: (B, T, D) decoder states, or with `rows` the real positions' only, (N, D).
            cross_kv: from `cross_kv(memory_out)`.
            src_pad: (B, S) True at source padding.
            need_weights: also return head-averaged cross-attention weights (B, T, S).
            rows: the real target positions (`nmt.model.packing`): every position-wise part
                runs on those N rows, the attention on the padded layout.
        """
        h = self._in(x, self.self_attn_norm)
        if rows is None:
            y, _ = self.self_attn(h, h, causal=True)
        else:
            q, kv = self.self_attn.project_qkv(h, rows=rows)
            y, _ = self.self_attn.attend_heads(q, kv, causal=True, rows=rows)
        x = self._out(x, y, self.self_attn_norm)
        return self._cross_and_ffn(x, cross_kv, src_pad=src_pad, need_weights=need_weights, rows=rows)

    def step(
        self,
        x: Tensor,
        *,
        self_kv: KVCache,
        cross_kv: KVCache,
        src_pad: Tensor,
        group: int = 1,
    ) -> Tensor:
        """One decoding time step: x (B, 1, D) -> (B, 1, D).

        Args:
            self_kv: self-attention K/V (B, H, t + 1, Dh): the t cached positions and a free last
                slot, which this step fills in place with the new position's K/V.
            cross_kv, src_pad: per source sentence, B / group rows: `group` consecutive rows of
                `x` (the beams of one sentence) share one (see `MultiHeadAttention.attend`).
        """
        h = self._in(x, self.self_attn_norm)
        q, new_kv = self.self_attn.project_qkv(h)
        self_kv.set_last_(new_kv)
        y, _ = self.self_attn.attend_heads(q, self_kv)  # the newest position may see every cached one
        x = self._out(x, y, self.self_attn_norm)
        x, _ = self._cross_and_ffn(x, cross_kv, src_pad=src_pad, need_weights=False, group=group)
        return x

    def _cross_and_ffn(
        self,
        x: Tensor,
        cross_kv: KVCache,
        *,
        src_pad: Tensor,
        need_weights: bool,
        group: int = 1,
        rows: Rows | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        h = self._in(x, self.cross_attn_norm)
        y, weights = self.cross_attn.attend(
            h, cross_kv, key_pad=src_pad, need_weights=need_weights, group=group, rows=rows
        )
        x = self._out(x, y, self.cross_attn_norm)
        return self._out(x, self.ffn(self._in(x, self.ffn_norm)), self.ffn_norm), weights
