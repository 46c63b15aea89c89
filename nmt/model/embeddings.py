"""Token embeddings scaled by sqrt(d_model), plus sinusoidal or learned positions."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from nmt.tokens import PAD_ID


def check_shareable(share_embeddings: str, src_vocab_size: int, tgt_vocab_size: int) -> None:
    """ValueError when `share_embeddings='all'` is asked of two vocabularies of different sizes."""
    if share_embeddings == "all" and src_vocab_size != tgt_vocab_size:
        raise ValueError(
            f"share_embeddings='all' needs one vocabulary for both sides, but the source has "
            f"{src_vocab_size} entries and the target {tgt_vocab_size}; use a joint vocabulary "
            f"or share_embeddings='decoder'/'none'"
        )


TableLayout = Literal["interleaved", "halves", "fairseq"]
FAIRSEQ_FIRST_POSITION = 2  # fairseq numbers positions from padding_idx + 1, and its padding_idx is 1


def sinusoidal_table(max_len: int, d_model: int, *, layout: TableLayout = "interleaved") -> Tensor:
    """The (max_len, D) table of Vaswani et al. (2017), section 3.5.

    interleaved: PE[pos, 2i] = sin(pos / 10000^(2i/D)) and PE[pos, 2i+1] = cos(pos / 10000^(2i/D)).
    halves (Marian's, as Hugging Face's MarianSinusoidalPositionalEmbedding builds it): the same
    sines in columns 0 .. ceil(D/2)-1 and the cosines after them.
    fairseq (its SinusoidalPositionalEmbedding, in float32 as it computes it): sin(p * w_i) in columns
    0 .. D/2-1 and cos(p * w_i) after them, w_i = 10000^(-i/(D/2-1)), a zero column last when D is
    odd; row r is fairseq's position r + 2, where its first token sits.
    """
    if layout == "fairseq":
        half = d_model // 2
        step = math.log(10000) / (half - 1)
        freqs = torch.exp(torch.arange(half, dtype=torch.float) * -step)
        angles = torch.arange(max_len + FAIRSEQ_FIRST_POSITION, dtype=torch.float).unsqueeze(1) * freqs.unsqueeze(0)
        out = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
        if d_model % 2:
            out = torch.cat([out, torch.zeros(out.size(0), 1)], dim=1)
        return out[FAIRSEQ_FIRST_POSITION:].contiguous()
    if layout == "halves":  # in float64, as Hugging Face computes it (numpy), then float32
        pos = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)
        angles = pos / torch.pow(10000.0, 2 * (torch.arange(d_model, dtype=torch.float64) // 2) / d_model)
        half = (d_model + 1) // 2
        out = torch.zeros(max_len, d_model, dtype=torch.float64)
        out[:, :half] = torch.sin(angles[:, 0::2])
        out[:, half:] = torch.cos(angles[:, 1::2])
        return out.float()
    position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)  # (L, 1)
    inv_freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq[: d_model // 2])
    return table


class TokenEmbedding(nn.Module):
    """Token ids (B, T) -> vectors (B, T, D) times sqrt(D) (times 1 with `scaled=False`, for an imported
    model trained so); row `PAD_ID` starts at zero.

    `weight` (V, D) is the matrix that weight tying shares with the output projection.
    """

    def __init__(self, vocab_size: int, d_model: int, *, scaled: bool = True) -> None:
        super().__init__()
        self.scale = math.sqrt(d_model) if scaled else 1.0
        self.weight = nn.Parameter(torch.empty(vocab_size, d_model))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """normal(0, D**-0.5), so that after the sqrt(D) scaling entries have unit variance."""
        nn.init.normal_(self.weight, mean=0.0, std=self.weight.size(1) ** -0.5)
        with torch.no_grad():
            self.weight[PAD_ID].zero_()

    def forward(self, ids: Tensor) -> Tensor:
        """(B, T) ids -> (B, T, D)."""
        return nn.functional.embedding(ids, self.weight, padding_idx=PAD_ID) * self.scale


class Embeddings(nn.Module):
    """Scaled token embedding + position embedding, [a LayerNorm,] then dropout: (B, T) ids -> (B, T, D).

    Args:
        tokens: the token embedding, possibly shared with the other side and the output layer.
        max_len: positions 0 .. max_len-1 are supported.
        positions: 'sinusoidal' (fixed table, not saved in the state dict) or 'learned'.
        table_layout: the sinusoidal table's (`sinusoidal_table`).
        layernorm: a LayerNorm over the sum (an imported fairseq `--layernorm-embedding` model).
    """

    table: Tensor  # (max_len, D) sinusoidal buffer, only when positions == 'sinusoidal'

    def __init__(
        self,
        tokens: TokenEmbedding,
        *,
        max_len: int,
        positions: Literal["sinusoidal", "learned"],
        dropout: float,
        table_layout: TableLayout = "interleaved",
        layernorm: bool = False,
    ) -> None:
        super().__init__()
        d_model = tokens.weight.size(1)
        self.tokens = tokens
        self.max_len = max_len
        self.learned: nn.Embedding | None = None
        if positions == "learned":
            self.learned = nn.Embedding(max_len, d_model)
            nn.init.normal_(self.learned.weight, mean=0.0, std=d_model**-0.5)
        else:
            # Recomputed on construction, so checkpoints carry no table and any max_len loads.
            self.register_buffer("table", sinusoidal_table(max_len, d_model, layout=table_layout), persistent=False)
        self.norm: nn.Module = nn.LayerNorm(d_model) if layernorm else nn.Identity()
        self.dropout = nn.Dropout(dropout)

    def forward(self, ids: Tensor, *, offset: int = 0) -> Tensor:
        """(B, T) ids whose first token sits at position `offset` -> (B, T, D)."""
        length = ids.size(1)
        if offset + length > self.max_len:
            raise ValueError(
                f"sequence reaches position {offset + length - 1}, but the model supports "
                f"positions below max_len={self.max_len}"
            )
        if self.learned is not None:
            pos = self.learned.weight[offset : offset + length]
        else:
            pos = self.table[offset : offset + length]
        return self.dropout(self.norm(self.tokens(ids) + pos.to(self.tokens.weight.dtype)))
