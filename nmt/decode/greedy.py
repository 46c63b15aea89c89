"""Batched left-to-right decoding with the decoder's incremental state: greedy search and the
loop that sampling shares. Greedy is the beam=1 reference for beam search."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from nmt.config import DecodeConfig
from nmt.decode.beam import Hypothesis, MemoryRows, forbid_tokens_, repeated_ngram_ids
from nmt.decode.lengths import length_penalty, output_limits
from nmt.model import Memory, Seq2SeqModel
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
    """One token per sentence per step, chosen by `choose` (argmax, sampling), until all emitted EOS; a
    sentence that has leaves the batch, so one that runs to its length limit costs only its own steps.

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
    encoded = model.encode(src_ids, src_pad)
    memory: Memory | MemoryRows = encoded
    state = model.init_state(encoded)
    alive = torch.arange(batch, device=device)  # (n,) the sentence of each working row; finished ones leave
    last = torch.full((batch, 1), start_id, dtype=torch.long, device=device)
    tokens = torch.zeros((batch, steps), dtype=torch.long, device=device)
    token_scores = torch.zeros((batch, steps), device=device)
    lengths = torch.zeros(batch, dtype=torch.long, device=device)  # tokens before EOS
    total = torch.zeros(batch, device=device)
    for step in range(steps):
        logits, state = model.decode_step(last, memory, state)
        logp = torch.log_softmax(logits.float(), dim=-1)
        repeats = None
        if cfg.no_repeat_ngram > 0:
            repeats = repeated_ngram_ids(tokens[alive, :step], n=cfg.no_repeat_ngram)
        limits = max_out[alive] if step >= first_limit else None  # none reached yet: skip that pass over logp
        forbid_tokens_(logp, step=step, min_len=cfg.min_len, max_out=limits, banned=repeats)
        chosen = choose(logp)
        scored = logp.gather(1, chosen.unsqueeze(1)).squeeze(1)
        tokens[alive, step] = chosen
        token_scores[alive, step] = scored
        total[alive] += scored  # the EOS's log-prob included
        going = chosen != EOS_ID
        lengths[alive] += going.long()
        keep = going.nonzero().squeeze(1)  # host sync: which sentences go on
        if keep.numel() == 0:
            break
        if keep.numel() < alive.numel():  # a sentence that emitted EOS leaves the batch (as in beam search)
            alive, chosen = alive[keep], chosen[keep]
            state = state.reorder(keep, same_source=False)
            memory = MemoryRows(encoded, alive)  # selected only if the decoder reads it
        last = chosen.unsqueeze(1)
    scores = (total / length_penalty(lengths + 1, mode=cfg.length_penalty, alpha=cfg.alpha)).tolist()
    tokens_list, token_scores_list, lengths_list = tokens.tolist(), token_scores.tolist(), lengths.tolist()
    return [
        Hypothesis(tokens_list[b][:n], scores[b], token_scores_list[b][: n + 1]) for b, n in enumerate(lengths_list)
    ]
