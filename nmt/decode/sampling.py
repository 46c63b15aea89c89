"""Ancestral sampling with temperature, top-k and nucleus (top-p) filtering, for back-translation."""

from __future__ import annotations

import torch
from torch import Tensor

from nmt.decode.beam import Hypothesis, LengthPenaltyMode
from nmt.decode.greedy import decode_left_to_right
from nmt.model import Seq2SeqModel


def filter_logits(logp: Tensor, *, temperature: float, top_k: int, top_p: float) -> Tensor:
    """Tempered log-probs with everything outside the top-k / top-p set at -inf.

    top-p keeps the smallest set of most likely tokens whose mass reaches `top_p`
    (Holtzman et al. 2020), always at least the most likely one.

    Args:
        logp: (B, V) log-probs (forbidden tokens already -inf).
    Returns:
        (B, V) unnormalised log-weights to sample from.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    scores = logp / temperature
    if 0 < top_k < scores.size(-1):
        kth = scores.topk(top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = scores.sort(dim=-1, descending=True)
        probs = torch.softmax(sorted_scores, dim=-1)
        mass_before = probs.cumsum(-1) - probs
        drop = (mass_before >= top_p).scatter(1, order, mass_before >= top_p)
        scores = scores.masked_fill(drop, float("-inf"))
    return scores


@torch.inference_mode()
def sample(
    model: Seq2SeqModel,
    src_ids: Tensor,
    src_pad: Tensor,
    *,
    max_len_a: float,
    max_len_b: int,
    min_len: int = 1,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    length_penalty: LengthPenaltyMode = "average",
    alpha: float = 1.0,
) -> list[Hypothesis]:
    """Sample one translation per sentence; `token_scores` are the model's (untempered) log-probs.

    Args:
        src_ids: (B, S) source token ids; src_pad: (B, S) True at padding.
        generator: on the model's device, for reproducible samples.
    """

    def choose(logp: Tensor) -> Tensor:
        scores = filter_logits(logp, temperature=temperature, top_k=top_k, top_p=top_p)
        return torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator).squeeze(1)

    return decode_left_to_right(
        model, src_ids, src_pad, choose=choose, max_len_a=max_len_a, max_len_b=max_len_b,
        min_len=min_len, mode=length_penalty, alpha=alpha,
    )  # fmt: skip
