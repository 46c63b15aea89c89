"""Token ids in, hypotheses out: greedy, beam search or sampling behind one entry point.

`search` decodes source id sequences in length-sorted token-budget batches and returns
the hypotheses in input order; validation (`nmt.train`) and `translate` both call it, so
they decode alike. Text never appears here: that is `nmt.decode.translate`.

The model may also be a `SearchEngine`: a decoder that runs outside torch (the CTranslate2
engine of `nmt.decode.ct2`) and does its own batching; `search` hands it the same ids and
returns its hypotheses, so callers never ask which kind they hold.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from nmt.config import DecodeConfig
from nmt.data.batching import make_batches
from nmt.decode.beam import Hypothesis, beam_search
from nmt.decode.constrained import Terms, constrained_beam_search
from nmt.decode.greedy import greedy_search
from nmt.decode.sampling import sample
from nmt.model import Seq2SeqModel
from nmt.model.attention import MultiHeadAttention
from nmt.precision import resolve_decode_precision
from nmt.tokens import BOS_ID, PAD_ID


def decoding_form(
    model: Seq2SeqModel | SearchEngine, device: torch.device, precision: str, *, in_place: bool = False
) -> Seq2SeqModel | SearchEngine:
    """The form of `model` that `search` decodes with, built by the caller once per validation,
    translate or serve load and passed in (no cache anywhere, so no weights can go stale):
    a module in eval mode at `precision` (auto resolved for `device` by `nmt.precision`) whose
    attention layers have their q/k/v projections fused (`MultiHeadAttention.fuse_qkv`).

    In fp32 the copy shares the model's parameters (new module objects, no weight copied; only
    the fused q/k/v weights are new); in bf16/fp16 its weights are cast once, as
    fairseq-generate --fp16 and CTranslate2 do, rather than autocasting every op, which spares
    re-casting the weights (the (V, D) output projection included) at every step: with
    autocast, bf16 greedy decoding was slower than fp32 (BENCHMARKS.md). Log-softmax and the
    search run in fp32 on the step's logits. `in_place`: convert `model` itself (a model loaded
    only to decode), sparing the copy. A `SearchEngine` is returned as it is.
    """
    if not isinstance(model, torch.nn.Module):
        return model
    precision = resolve_decode_precision(precision, device)
    if precision == "fp32":
        shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
        form = model if in_place else copy.deepcopy(model, shared)  # new modules, the same tensors
    else:
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        form = model if in_place else _copy_without_grads(model)
        form.to(dtype).requires_grad_(False)
    form.eval()
    for module in form.modules():
        if isinstance(module, MultiHeadAttention):
            module.fuse_qkv()
    return form  # type: ignore[return-value]


def _copy_without_grads(model: torch.nn.Module) -> torch.nn.Module:
    grads = [p.grad for p in model.parameters()]
    for p in model.parameters():
        p.grad = None  # not copied
    try:
        return copy.deepcopy(model)
    finally:
        for p, grad in zip(model.parameters(), grads, strict=True):
            p.grad = grad


@runtime_checkable
class SearchEngine(Protocol):
    """A decoder that is not a torch model: source ids in, hypotheses out, like `search`."""

    max_len: int  # longest source/target in tokens (incl. bos/eos), as `Seq2SeqModel.max_len`

    def search(
        self,
        src_seqs: list[list[int]],
        cfg: DecodeConfig,
        *,
        on_batch: Callable[[int], object] | None = None,
        start_id: int = BOS_ID,
    ) -> list[list[Hypothesis]]:
        """Up to `cfg.nbest` hypotheses per sequence (each ending in eos), best first, in input order;
        none for an empty sequence. `on_batch(n)` follows each batch of n sentences."""
        ...


# ---------------------------------------------------------------- batched search


def pad_batch(seqs: list[list[int]], *, device: torch.device) -> tuple[Tensor, Tensor]:
    """Right-pad id sequences -> src_ids (B, S) long and src_pad (B, S) bool, True at padding."""
    width = max(len(s) for s in seqs)
    src_ids = torch.tensor([s + [PAD_ID] * (width - len(s)) for s in seqs], dtype=torch.long).to(device)
    return src_ids, src_ids == PAD_ID


def search_batch(
    model: Seq2SeqModel,
    src_ids: Tensor,
    src_pad: Tensor,
    *,
    cfg: DecodeConfig,
    start_id: int = BOS_ID,
    terms: list[Terms] | None = None,
    glued: Tensor | None = None,
) -> list[list[Hypothesis]]:
    """Up to `cfg.nbest` hypotheses per sentence, best first: greedy, beam search or sampling.

    Beam 1 without n-gram blocking is greedy search (the beam driver at K=1 would also keep
    the EOS candidates it passes, a different search); sampling draws exactly `cfg.nbest`
    samples per sentence whatever the beam size. A batch in which any sentence has `terms`
    (target token sequences its output must hold) is searched by `constrained_beam_search`
    at any beam size; its sentences without terms are searched as `beam_search` would. `glued`:
    the tokens that may not follow a term (`nmt.decode.constrained.word_continuations`).

    Args:
        src_ids: (B, S) source ids ending in eos; src_pad: (B, S) True at padding.
    """
    if terms is not None and any(terms):
        if cfg.sampling:
            raise ValueError("target terms need beam search, not sampling")
        return constrained_beam_search(model, src_ids, src_pad, terms, cfg=cfg, start_id=start_id, glued=glued)
    if cfg.sampling:
        k = cfg.nbest  # each row repeated k times, sampled in one batch
        rows = torch.arange(src_ids.size(0), device=src_ids.device).repeat_interleave(k)
        hyps = sample(model, src_ids[rows], src_pad[rows], cfg=cfg, start_id=start_id)
        return [sorted(hyps[i : i + k], key=lambda h: -h.score) for i in range(0, len(hyps), k)]
    if cfg.beam == 1 and cfg.no_repeat_ngram == 0:
        return [[hyp] for hyp in greedy_search(model, src_ids, src_pad, cfg=cfg, start_id=start_id)]
    return beam_search(model, src_ids, src_pad, cfg=cfg, start_id=start_id)


def search(
    model: Seq2SeqModel | SearchEngine,
    src_seqs: list[list[int]],
    cfg: DecodeConfig,
    *,
    device: torch.device,
    on_batch: Callable[[int], object] | None = None,
    start_id: int = BOS_ID,
    terms: list[Terms] | None = None,
    glued: Tensor | None = None,
) -> list[list[Hypothesis]]:
    """Decode source id sequences (each ending in eos) in token-budget batches, results in input order.

    Sequences are sorted by length so that a batch holds similar lengths; a batch's cost
    is its padded size (sentences x longest source), at most `cfg.batch_tokens` unless a
    single sentence is longer. An empty sequence gets no hypotheses and no model call.
    `on_batch(n)` is called after each batch with its number of sentences. `model` is the
    caller's `decoding_form` (any torch model decodes, but unfused and at its own precision).
    A `SearchEngine` decodes on its own device (`device` is not used) with its own batching.
    `start_id` is the decoder's first input: BOS, or a multilingual model's target language token.
    `terms`: per sequence, target terms (token ids) its output must hold (`nmt.decode.constrained`);
    sentences with and without terms share batches; `glued` (V,) bool marks the tokens that may not follow a
    term (built by the caller once per vocabulary). A `SearchEngine` takes no terms.
    """
    out: list[list[Hypothesis]] = [[] for _ in src_seqs]
    todo = [i for i, s in enumerate(src_seqs) if s]
    if not todo:
        return out
    if isinstance(model, SearchEngine):
        if terms is not None and any(terms):
            raise ValueError("target terms need nmt's own beam search (a checkpoint), not a SearchEngine")
        return model.search(src_seqs, cfg, on_batch=on_batch, start_id=start_id)
    lengths = np.array([len(src_seqs[i]) for i in todo])
    # sampling repeats every sentence nbest times inside the batch: keep the batch within the budget
    budget = max(cfg.batch_tokens // cfg.nbest, 1) if cfg.sampling else cfg.batch_tokens
    batches = make_batches(lengths, batch_tokens=budget, max_sentences=None, seed=0, epoch=0, shuffle=False)
    with torch.inference_mode():
        for batch in batches:
            index = [todo[j] for j in batch.tolist()]
            src_ids, src_pad = pad_batch([src_seqs[i] for i in index], device=device)
            batch_terms = None if terms is None else [terms[i] for i in index]
            found = search_batch(model, src_ids, src_pad, cfg=cfg, start_id=start_id, terms=batch_terms, glued=glued)
            for i, hyps in zip(index, found, strict=True):
                out[i] = hyps
            if on_batch is not None:
                on_batch(len(index))
    return out


def translate_ids(
    model: Seq2SeqModel,
    src_seqs: list[list[int]],
    decode_cfg: DecodeConfig,
    *,
    device: torch.device,
    start_id: int = BOS_ID,
) -> list[list[int]]:
    """Best target ids (no bos/eos) for each source id sequence (already ending in eos), in order.

    Used by validation during training; `model` is its `decoding_form`.
    """
    hyps = search(model, src_seqs, decode_cfg, device=device, start_id=start_id)
    return [best[0].tokens if best else [] for best in hyps]
