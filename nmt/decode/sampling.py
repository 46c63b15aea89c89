"""Ancestral sampling with temperature, top-k and nucleus (top-p) filtering, for back-translation."""

from __future__ import annotations

import torch
from torch import Tensor

from nmt.config import DecodeConfig
from nmt.decode.beam import Hypothesis
from nmt.decode.greedy import decode_left_to_right
from nmt.model import Seq2SeqModel
from nmt.tokens import BOS_ID


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
    cfg: DecodeConfig,
    generator: torch.Generator | None = None,
    start_id: int = BOS_ID,
) -> list[Hypothesis]:
    """Sample one translation per sentence; `token_scores` are the model's (untempered) log-probs.

    Tokens are drawn from the allowed ones (length limits, min_len and n-gram blocking as
    in beam search) after `filter_logits`; beam and nbest are the caller's business
    (`nmt.decode.search` repeats each sentence nbest times).

    Args:
        src_ids: (B, S) source token ids; src_pad: (B, S) True at padding.
        cfg: temperature, top_k, top_p, length limits, min_len, length penalty, no_repeat_ngram.
        generator: on the model's device, for reproducible samples.
    """

    def choose(logp: Tensor) -> Tensor:
        scores = filter_logits(logp, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p)
        return torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator).squeeze(1)

    return decode_left_to_right(model, src_ids, src_pad, cfg=cfg, choose=choose, start_id=start_id)
