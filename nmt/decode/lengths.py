"""The length rules of every decoding engine: the length penalty and the output limits.

nmt's beam, greedy and sampling searches, the CTranslate2 engine (which maps them onto
CTranslate2's options and re-scores its outputs with them) and the teacher-forced scorer all
call these, so a change to a rule changes every engine at once.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

LengthPenaltyMode = Literal["none", "average", "gnmt"]


def length_penalty(lengths: Tensor, *, mode: LengthPenaltyMode, alpha: float) -> Tensor:
    """The divisor lp(|y|) of a hypothesis' summed log-prob: score = sum(log p) / lp(|y|).

    |y| counts the generated tokens including the EOS.
      none:    lp = 1
      average: lp = |y| ** alpha                  (fairseq's --lenpen; alpha=1 is the mean log-prob)
      gnmt:    lp = ((5 + |y|) / 6) ** alpha      (Wu et al. 2016, eq. 14)

    Args:
        lengths: any shape, integer or float.
    Returns:
        float32 tensor of the same shape.
    """
    lengths = lengths.float()
    if mode == "none":
        return torch.ones_like(lengths)
    if mode == "average":
        return lengths.pow(alpha)
    if mode == "gnmt":
        return ((5.0 + lengths) / 6.0).pow(alpha)
    raise ValueError(f"unknown length penalty {mode!r}; expected none, average or gnmt")


def output_limits(src_pad: Tensor, *, max_len_a: float, max_len_b: int, model_max_len: int) -> Tensor:
    """Most tokens (EOS excluded) each sentence may generate: min(floor(a*|x| + b), max_len - 1).

    Args:
        src_pad: (B, S) True at padding; |x| is the number of non-pad tokens.
    Returns:
        (B,) long.
    """
    # host sync, once per batch: Python floats give the exact floor on every device (MPS has no float64)
    src_len = (~src_pad).sum(1).tolist()
    limits = [output_limit(n, max_len_a=max_len_a, max_len_b=max_len_b, model_max_len=model_max_len) for n in src_len]
    return torch.tensor(limits, dtype=torch.long, device=src_pad.device)


def output_limit(src_len: int, *, max_len_a: float, max_len_b: int, model_max_len: int) -> int:
    """Most tokens (EOS excluded) a sentence of `src_len` source tokens may generate:
    min(floor(max_len_a * src_len + max_len_b), model_max_len - 1), at least 0."""
    return max(0, min(math.floor(max_len_a * src_len + max_len_b), model_max_len - 1))
