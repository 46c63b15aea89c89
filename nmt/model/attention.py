"""Multi-head attention on `F.scaled_dot_product_attention`, with an explicit K/V cache.

Masks named `*_pad` are True at padding; `attention_mask` converts them, once, into
SDPA's boolean convention where True means "may attend". The explicit softmax path
(`softmax_attention`) runs when attention weights are requested, and when training in
bf16/fp16 on CPU, where it is faster than SDPA's CPU kernels (`explicit_is_faster`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nmt.model.packing import Rows


@dataclass(frozen=True, slots=True)
class KVCache:
    """Projected keys and values of one attention layer, each (B, H, L, Dh)."""

    k: Tensor
    v: Tensor

    @property
    def length(self) -> int:
        """L, the number of cached positions."""
        return self.k.size(2)

    def set_last_(self, new: KVCache) -> None:
        """Write `new` (B, H, 1, Dh) into the last position, in place (a decoding step filling its slot)."""
        self.k[:, :, -1:] = new.k
        self.v[:, :, -1:] = new.v

    def index_select(self, idx: Tensor) -> KVCache:
        """Rows `idx` (N,) of the batch: beam reordering, shrinking or repeating."""
        return KVCache(self.k.index_select(0, idx), self.v.index_select(0, idx))


def attention_mask(
    key_pad: Tensor | None, *, causal: bool, tgt_len: int, src_len: int, device: torch.device | None = None
) -> Tensor | None:
    """SDPA boolean mask, True = may attend, broadcastable to (B, H, T, S); None = attend everywhere.

    Args:
        key_pad: (B, S) True at padded keys, or None.
        causal: query i (of the last T positions) may see keys up to S - T + i (bottom-right
            aligned, so cached decoding and full decoding agree).
    """
    allowed = None
    if key_pad is not None:
        allowed = ~key_pad[:, None, None, :]  # (B, 1, 1, S)
    if causal:
        tri = torch.ones(tgt_len, src_len, dtype=torch.bool, device=device).tril(src_len - tgt_len)
        allowed = tri if allowed is None else allowed & tri
    return allowed


def softmax_attention(
    q: Tensor, k: Tensor, v: Tensor, allowed: Tensor | None, *, dropout_p: float = 0.0
) -> tuple[Tensor, Tensor]:
    """softmax(q k^T / sqrt(Dh)) v, written out (the softmax in fp32 whatever the input dtype).

    Args:
        q: (B, H, T, Dh); k, v: (B, H, S, Dh); allowed: as from `attention_mask`.

    Returns:
        output (B, H, T, Dh) and the weights (B, H, T, S), before dropout, in q's dtype; zero
        for a query whose every key is masked.
    """
    scores = q @ k.transpose(-2, -1) * (1.0 / math.sqrt(q.size(-1)))  # (B, H, T, S)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    weights = scores.softmax(dim=-1, dtype=torch.promote_types(q.dtype, torch.float32)).to(q.dtype)
    if allowed is not None:  # a query that may see no key: zero weights and output, as SDPA gives (not NaN)
        weights = weights.masked_fill(~allowed.any(dim=-1, keepdim=True), 0.0)
    out = F.dropout(weights, p=dropout_p) @ v if dropout_p > 0.0 else weights @ v
    return out, weights


def explicit_is_faster(q: Tensor) -> bool:
    """Training in bf16/fp16 on CPU: the written-out attention, whose matmuls run on the CPU's
    bf16 units, is ~4x faster forward + backward than SDPA's CPU flash kernel, whose backward
    dominates a step there (Multi30k shapes, B=128, H=4, T=S=30: 7.4 ms against 32 ms; in fp32
    SDPA is the faster one, 9.9 ms against 12.5 ms). Measured with torch 2.13; BENCHMARKS.md."""
    return q.device.type == "cpu" and q.dtype != torch.float32 and q.requires_grad


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention with `n_heads` heads of width d_model / n_heads."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        # q/k/v weight and bias concatenated, set on a decoding copy only (`fuse_qkv`)
        self.fused_qkv: tuple[Tensor, Tensor] | None = None

    def _heads(self, x: Tensor) -> Tensor:
        """(B, L, D) -> (B, H, L, Dh)."""
        return x.unflatten(-1, (self.n_heads, self.head_dim)).transpose(1, 2)

    def project_kv(self, key_value: Tensor) -> KVCache:
        """Keys and values (B, H, L, Dh) for inputs (B, L, D); cached by the decoder."""
        return KVCache(self._heads(self.k_proj(key_value)), self._heads(self.v_proj(key_value)))

    def fuse_qkv(self) -> None:
        """Concatenate the q/k/v projections into one weight, so that `project_qkv` is one matmul.

        A snapshot of the weights as they are now, for a model copy that only decodes (made by
        `nmt.decode.search.decoding_form`, once per validation or load, after any cast or move):
        nothing updates it when the projections change, and nothing else sets it.
        """
        with torch.no_grad():
            projections = (self.q_proj, self.k_proj, self.v_proj)
            self.fused_qkv = (torch.cat([p.weight for p in projections]), torch.cat([p.bias for p in projections]))

    def project_qkv(self, x: Tensor, *, rows: Rows | None = None) -> tuple[Tensor, KVCache]:
        """Queries (B, H, L, Dh) and keys/values of self-attention inputs `x` (B, L, D): one matmul
        with the fused weight of a decoding copy (`fuse_qkv`), else three. With `rows`, `x` is the
        real positions' (N, D), projected as they are and laid out padded (zeros at padding)."""
        if rows is not None:
            q, k, v = (self._heads(rows.unpack(p(x))) for p in (self.q_proj, self.k_proj, self.v_proj))
            return q, KVCache(k, v)
        if self.fused_qkv is None:
            return self._heads(self.q_proj(x)), self.project_kv(x)
        qkv = F.linear(x, *self.fused_qkv)
        q, k, v = (self._heads(t) for t in qkv.chunk(3, dim=-1))
        return q, KVCache(k, v)

    def attend(
        self, query: Tensor, kv: KVCache, *, rows: Rows | None = None, **options: Any
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from `query` (B, T, D), or with `rows` the real positions' (N, D), to projected
        keys/values `kv`: `attend_heads` after the query projection (the options are its keyword
        arguments)."""
        q = self.q_proj(query)
        return self.attend_heads(self._heads(q if rows is None else rows.unpack(q)), kv, rows=rows, **options)

    def attend_heads(
        self,
        q: Tensor,
        kv: KVCache,
        *,
        key_pad: Tensor | None = None,
        causal: bool = False,
        need_weights: bool = False,
        group: int = 1,
        rows: Rows | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from queries already projected and split into heads, q (B, H, T, Dh), to `kv`.

        Args:
            key_pad: (B, S) True at padded keys.
            causal: mask future keys (see `attention_mask`).
            need_weights: also return head-averaged weights (B, T, S), via the explicit softmax.
            group: `group` consecutive query rows share one row of `kv` and `key_pad` (the beams
                of one source sentence in cross-attention): `kv` has B / group rows. Their queries
                are stacked into one attention call per source instead of repeating its K/V.
            rows: output the real positions only, (N, D), their output projection only.

        Returns:
            output (B, T, D) (with `rows`: (N, D)) and the weights or None.
        """
        batch, _, tgt_len, _ = q.shape
        if group > 1:
            if causal:
                raise ValueError("grouped queries attend to a shared source: causal masking does not apply")
            q = q.unflatten(0, (-1, group)).transpose(1, 2).flatten(2, 3)  # (B / group, H, group * T, Dh)
        src_len = kv.length
        dropout_p = self.dropout if self.training else 0.0
        weights = None
        if need_weights or explicit_is_faster(q):
            allowed = attention_mask(key_pad, causal=causal, tgt_len=q.size(2), src_len=src_len, device=q.device)
            out, all_weights = softmax_attention(q, kv.k, kv.v, allowed, dropout_p=dropout_p)
            if need_weights:
                weights = all_weights.mean(dim=1).reshape(batch, tgt_len, src_len)
        elif key_pad is None and (not causal or q.size(2) == src_len):
            # is_causal without an explicit mask keeps the fused (flash) kernels available.
            out = F.scaled_dot_product_attention(q, kv.k, kv.v, dropout_p=dropout_p, is_causal=causal)
        else:
            allowed = attention_mask(key_pad, causal=causal, tgt_len=q.size(2), src_len=src_len, device=q.device)
            out = F.scaled_dot_product_attention(q, kv.k, kv.v, attn_mask=allowed, dropout_p=dropout_p)
        if group > 1:
            out = out.unflatten(2, (group, tgt_len)).transpose(1, 2).flatten(0, 1)  # back to (B, H, T, Dh)
        out = out.transpose(1, 2).flatten(2)
        return self.out_proj(out if rows is None else rows.pack(out)), weights

    def forward(
        self,
        query: Tensor,
        key_value: Tensor,
        *,
        key_pad: Tensor | None = None,
        causal: bool = False,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from `query` (B, T, D) to `key_value` (B, S, D); see `attend`."""
        kv = self.project_kv(key_value)
        return self.attend(query, kv, key_pad=key_pad, causal=causal, need_weights=need_weights)
