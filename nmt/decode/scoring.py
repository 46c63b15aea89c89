"""Teacher-forced scores: what the model thinks of given outputs, in the beam search's own units,
and per token (`token_logprobs`, behind `nmt translate --confidence`).

`sequence_scores` runs the full forward pass over (source, [bos] + output) and returns each pair's
summed token log-prob (output + </s>) divided by the search's length penalty, so a hypothesis from
any engine (nmt's search, a CTranslate2 export, a reference) can be compared with what nmt's beam
search would have scored it. Used by the export benchmarks to judge lines where two engines differ.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from nmt.decode.lengths import length_penalty
from nmt.tokens import BOS_ID, EOS_ID, PAD_ID


@torch.inference_mode()
def sequence_scores(
    model: torch.nn.Module,
    src: Sequence[Sequence[int]],
    tgt: Sequence[Sequence[int]],
    *,
    penalty: str,
    alpha: float,
    batch_size: int = 64,
) -> list[float]:
    """Length-normalised log-prob of each `tgt[i]` + </s> given `src[i]`, in fp32 on the model's device.

    `penalty`/`alpha` are `decode.length_penalty`/`decode.alpha` (see `nmt.decode.lengths.length_penalty`).
    """
    device = next(model.parameters()).device
    out: list[float] = []
    for i in range(0, len(src), batch_size):
        s, t = src[i : i + batch_size], tgt[i : i + batch_size]
        width_s, width_t = max(map(len, s)), max(map(len, t)) + 1
        src_ids = torch.tensor([[*x] + [PAD_ID] * (width_s - len(x)) for x in s], device=device)
        tgt_in = torch.tensor([[BOS_ID, *y] + [PAD_ID] * (width_t - 1 - len(y)) for y in t], device=device)
        tgt_out = torch.tensor([[*y, EOS_ID] + [PAD_ID] * (width_t - 1 - len(y)) for y in t], device=device)
        logp = model(src_ids, src_ids == PAD_ID, tgt_in).float().log_softmax(-1)
        tok = logp.gather(-1, tgt_out.unsqueeze(-1)).squeeze(-1).masked_fill(tgt_out == PAD_ID, 0.0)
        lengths = torch.tensor([len(y) + 1 for y in t], device=device)
        out += (tok.sum(-1) / length_penalty(lengths, mode=penalty, alpha=alpha)).tolist()
    return out


@torch.inference_mode()
def token_logprobs(
    model: torch.nn.Module,
    src: Sequence[Sequence[int]],
    tgt: Sequence[Sequence[int]],
    *,
    start_id: int = BOS_ID,
    device: torch.device,
    batch_size: int = 64,
) -> list[np.ndarray]:
    """Log-prob of each token of `tgt[i]` and of its </s> given `src[i]` (with eos), teacher-forced from
    `start_id`, log-softmax in fp32 (whatever the model's precision). A CTranslate2 export
    (`nmt.decode.ct2.CT2Engine`) scores with its own `score_batch`."""
    if not isinstance(model, torch.nn.Module):
        return model.token_logprobs([list(s) for s in src], [list(t) for t in tgt], start_id=start_id)
    order = sorted(range(len(src)), key=lambda k: (len(src[k]), len(tgt[k])))
    out: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * len(src)
    for i in range(0, len(order), batch_size):
        index = order[i : i + batch_size]
        s, t = [src[k] for k in index], [tgt[k] for k in index]
        width_s, width_t = max(map(len, s)), max(map(len, t)) + 1
        src_ids = torch.tensor([[*x] + [PAD_ID] * (width_s - len(x)) for x in s], device=device)
        tgt_in = torch.tensor([[start_id, *y] + [PAD_ID] * (width_t - 1 - len(y)) for y in t], device=device)
        tgt_out = torch.tensor([[*y, EOS_ID] + [PAD_ID] * (width_t - 1 - len(y)) for y in t], device=device)
        logp = model(src_ids, src_ids == PAD_ID, tgt_in).float().log_softmax(-1)
        tok = logp.gather(-1, tgt_out.unsqueeze(-1)).squeeze(-1).cpu().numpy()
        for row, k in enumerate(index):
            out[k] = tok[row, : len(tgt[k]) + 1]
    return out


def confidence(logprobs: np.ndarray) -> float:
    """A translation's confidence: the mean probability the model gave each of its tokens and its </s>
    (teacher-forced; in [0, 1]; independent of the search's length penalty). Of the candidates measured in
    BENCHMARKS.md (mean log-prob = the default search score, least likely token, entropy, MC dropout) it
    tracks sentence chrF best on the validation set."""
    return float(np.exp(logprobs).mean()) if len(logprobs) else 0.0
