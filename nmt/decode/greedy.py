"""Batched left-to-right decoding with the decoder's incremental state: greedy search and the
loop that sampling shares. Greedy is the beam=1 reference for beam search."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from nmt.config import DecodeConfig
from nmt.decode.beam import Hypothesis, forbid_tokens_, repeated_ngram_ids
from nmt.decode.lengths import length_penalty, output_limits
from nmt.model import Seq2SeqModel
from nmt.tokens import BOS_ID, EOS_ID

TokenChooser = Callable[[Tensor], Tensor]  # (B, V) masked log-probs -> (B,) token ids


@torch.inference_mode()
def greedy_search(
    model: Seq2SeqModel, src_ids: Tensor, src_pad: Tensor, *, cfg: DecodeConfig, start_id: int = BOS_ID
) -> list[Hypothesis]:
    """Pick the most likely allowed token at every step; one hypothesis per sentence.

    Args:
        src_ids: (B, S) source token ids; src_pad: (B, S) True at padding.
        cfg: length limits, min_len, length penalty and alpha, no_repeat_ngram (beam is ignored).
    """
    return decode_left_to_right(
        model, src_ids, src_pad, cfg=cfg, choose=lambda logp: logp.argmax(-1), start_id=start_id
    )


@torch.inference_mode()
def decode_left_to_right(
    model: Seq2SeqModel,
    src_ids: Tensor,
    src_pad: Tensor,
    *,
    cfg: DecodeConfig,
    choose: TokenChooser,
    start_id: int = BOS_ID,
) -> list[Hypothesis]:
    """One token per sentence per step, chosen by `choose` (argmax, sampling), until all emitted EOS.

    Length limits, forbidden tokens and n-gram blocking are those of beam search;
    `token_scores` are the model's log-probs of the chosen tokens, and `score` is their
    sum over lp(|y|).

    Args:
        src_ids: (B, S) source token ids; src_pad: (B, S) True at padding.
        start_id: the decoder's first input: BOS, or a multilingual model's target language token.
    """
    batch, device = src_ids.size(0), src_ids.device
    max_out = output_limits(src_pad, max_len_a=cfg.max_len_a, max_len_b=cfg.max_len_b, model_max_len=model.max_len)
    first_limit, last_limit = torch.stack(max_out.aminmax()).tolist()  # host sync, once before the loop
    steps = last_limit + 1
    memory = model.encode(src_ids, src_pad)
    state = model.init_state(memory)
    last = torch.full((batch, 1), start_id, dtype=torch.long, device=device)
    tokens = torch.zeros((batch, steps), dtype=torch.long, device=device)
    token_scores = torch.zeros((batch, steps), device=device)
    lengths = torch.zeros(batch, dtype=torch.long, device=device)  # tokens before EOS
    total = torch.zeros(batch, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    for step in range(steps):
        logits, state = model.decode_step(last, memory, state)
        logp = torch.log_softmax(logits.float(), dim=-1)
        repeats = None
        if cfg.no_repeat_ngram > 0:
            repeats = repeated_ngram_ids(tokens[:, :step], n=cfg.no_repeat_ngram)
        limits = max_out if step >= first_limit else None  # none reached yet: skip that pass over logp
        forbid_tokens_(logp, step=step, min_len=cfg.min_len, max_out=limits, banned=repeats)
        chosen = choose(logp)
        tokens[:, step] = chosen
        token_scores[:, step] = logp.gather(1, chosen.unsqueeze(1)).squeeze(1)
        total = torch.where(finished, total, total + token_scores[:, step])
        lengths = torch.where(finished, lengths, lengths + (chosen != EOS_ID).long())
        finished = finished | (chosen == EOS_ID)
        if bool(finished.all()):  # host sync: stop once every sentence emitted EOS
            break
        last = chosen.unsqueeze(1)
    scores = (total / length_penalty(lengths + 1, mode=cfg.length_penalty, alpha=cfg.alpha)).tolist()
    tokens_list, token_scores_list, lengths_list = tokens.tolist(), token_scores.tolist(), lengths.tolist()
    return [
        Hypothesis(tokens_list[b][:n], scores[b], token_scores_list[b][: n + 1]) for b, n in enumerate(lengths_list)
    ]
