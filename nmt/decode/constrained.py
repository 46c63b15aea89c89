"""Lexically constrained beam search: outputs that contain given target terms (positive constraints).

Dynamic beam allocation (Post & Vilar 2018), vectorised as Hu et al. 2019 (and fairseq's
`--constraints`): a hypothesis' *bank* is the number of constraint tokens it has produced so
far; each step's candidates are grouped by bank and the K open beams are dealt round-robin over
the banks, highest bank first, so hypotheses that have placed a term are not crowded out by
better-scoring ones that have not, and slots of an empty bank go to the others. Candidates are
each beam's 2K best extensions overall (as the plain beam takes), each beam's single best token,
and for every beam and unmet term the token that starts or continues it.

Terms are unordered and may overlap one another in the output; a term required twice (its source
term occurs twice) must occur twice. Progress on a term is the longest prefix of it that the
hypothesis ends with (so abandoning a half-written term gives its tokens back; of several terms
begun, the furthest counts), computed from
the last tokens, never from per-hypothesis Python objects: a step is a few tensor operations on
all n*K beams, as in `beam.py`, whose pieces (`select_topk`, `finalize_finished`, `is_done`,
`BeamTrace`) this driver reuses.

A term is a whole word sequence: the token after it may not continue its last word (`glued`: the
vocabulary's pieces that attach to the piece before them, from `word_continuations`), so the term
"dog" cannot come out as "dogs". A hypothesis may end (EOS) only once it holds every term, or at
its length limit, where EOS is the only way out: a sentence whose terms cannot be met in its
length still gets outputs, ranked after any that meet them (the caller counts them). Sentences
without terms share the batch and are searched exactly as `beam_search` would (one bank: the K
best open extensions). The stopping rule is the exact one of `beam.is_done`, against the K-th
best output that meets every term; with `decode.early_stopping` (fairseq's rule, which an imported
fairseq model decodes with) an EOS ends a hypothesis only when it is among the step's first K
candidates as dealt over the banks (as fairseq's constrained search decides it: by their best score
alone, the EOS of a hypothesis holding every term would rarely rank among the K best, and it would
write on), and a sentence stops once K outputs that meet every term have ended.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
from torch import Tensor

from nmt.config import DecodeConfig
from nmt.decode.beam import (
    BeamTrace,
    FinishedStore,
    Hypothesis,
    MemoryRows,
    finalize_finished,
    forbid_tokens_,
    gather_beams,
    is_done,
    repeated_ngram_ids,
    select_topk,
    to_hypotheses,
)
from nmt.decode.lengths import output_limits
from nmt.model import Seq2SeqModel
from nmt.tokens import BOS_ID, EOS_ID, PAD_ID

Terms = list[tuple[int, ...]]  # one sentence's required target terms as token ids; a repeated term is required again


@dataclass(frozen=True)
class ConstraintSet:
    """A batch's terms as tensors: C distinct terms per sentence (padded), each up to L tokens."""

    ids: Tensor  # (B, C, L) long: term tokens, PAD after a term's end and in empty slots
    lengths: Tensor  # (B, C) long: tokens of each term, 0 for an empty slot
    counts: Tensor  # (B, C) long: times each term must occur, 0 for an empty slot

    @classmethod
    def build(cls, terms: list[Terms], device: torch.device) -> ConstraintSet:
        distinct = [Counter(t for t in row if t) for row in terms]
        slots = max((len(d) for d in distinct), default=0) or 1
        width = max((len(t) for d in distinct for t in d), default=0) or 1
        ids = torch.full((len(terms), slots, width), PAD_ID, dtype=torch.long)
        lengths = torch.zeros((len(terms), slots), dtype=torch.long)
        counts = torch.zeros((len(terms), slots), dtype=torch.long)
        for b, d in enumerate(distinct):
            for c, (term, count) in enumerate(d.items()):
                ids[b, c, : len(term)] = torch.tensor(term)
                lengths[b, c], counts[b, c] = len(term), count
        return cls(ids.to(device), lengths.to(device), counts.to(device))

    @property
    def total(self) -> Tensor:
        """(B,) constraint tokens each sentence must produce: its highest bank."""
        return (self.lengths * self.counts).sum(-1)


def term_progress(tails: Tensor, ids: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Where hypotheses stand on each term, from their last tokens.

    Args:
        tails: (n, M, W) the last W tokens of M hypotheses per sentence (W <= L; fewer when shorter).
        ids: (n, C, L) the sentences' terms; lengths (n, C) their lengths.
    Returns:
        complete (n, M, C) bool: the tokens end with the whole term (it has just been produced), and
        prefix (n, M, C) long: the longest proper prefix of the term they end with (0 if none).
    """
    n, m, width = tails.shape
    complete = torch.zeros((n, m, ids.size(1)), dtype=torch.bool, device=tails.device)
    prefix = torch.zeros((n, m, ids.size(1)), dtype=torch.long, device=tails.device)
    for span in range(1, min(width, ids.size(2)) + 1):
        match = (tails[:, :, None, width - span :] == ids[:, None, :, :span]).all(-1)  # (n, M, C)
        complete |= match & (lengths == span).unsqueeze(1)
        prefix.masked_fill_(match & (lengths > span).unsqueeze(1), span)  # longer spans come later and win
    return complete, prefix


def banks_of(hits: Tensor, prefix: Tensor, lengths: Tensor, counts: Tensor) -> Tensor:
    """Constraint tokens produced (n, M): the tokens of every term occurrence held (`hits`, (n, M, C)) plus
    the longest `prefix` of an unmet term that the hypothesis ends with. One prefix only, as fairseq's
    trie of terms counts it: terms that start alike (two words after the same "▁") would otherwise each
    count the shared token, and a hypothesis repeating it would rank as high as one writing a term on."""
    lengths, counts = lengths.unsqueeze(1), counts.unsqueeze(1)
    done = (torch.minimum(hits, counts) * lengths).sum(-1)
    return done + torch.where(hits < counts, prefix, 0).amax(-1)


def allocate(values: Tensor, banks: Tensor, *, k: int, top: int) -> Tensor:
    """Indices (n, k) of the candidates kept: dealt round-robin over banks, highest bank first.

    Within a bank candidates go best first; round r takes the r-th best of every bank. Candidates
    with value -inf are taken last (so a sentence with fewer than k live candidates keeps dead ones).
    `top`: more than the highest bank (known before the search: no host sync here).
    """
    m = values.size(1)
    by_value = values.argsort(dim=1, descending=True, stable=True)
    bank = torch.where(values.isfinite(), banks, -1).gather(1, by_value)
    by_bank = bank.argsort(dim=1, descending=True, stable=True)
    order, bank = by_value.gather(1, by_bank), bank.gather(1, by_bank)  # bank desc, then value desc
    pos = torch.arange(m, device=values.device).expand_as(bank)
    starts = torch.ones_like(bank, dtype=torch.bool)
    starts[:, 1:] = bank[:, 1:] != bank[:, :-1]
    rank = pos - torch.where(starts, pos, 0).cummax(1).values  # place within its bank
    key = torch.where(bank < 0, m * top * 2, rank * top + (top - 1 - bank))
    return order.gather(1, key.topk(k, dim=1, largest=False, sorted=True).indices)


def dedupe_(values: Tensor, beams: Tensor, tokens: Tensor, *, vocab: int) -> Tensor:
    """Set repeated (beam, token) candidates to -inf in place, keeping one of each; returns `values`."""
    key, order = (beams * vocab + tokens).sort(dim=1, stable=True)
    repeat = torch.zeros_like(key, dtype=torch.bool)
    repeat[:, 1:] = key[:, 1:] == key[:, :-1]
    return values.masked_fill_(torch.zeros_like(repeat).scatter(1, order, repeat), float("-inf"))


@torch.inference_mode()
def constrained_beam_search(
    model: Seq2SeqModel,
    src_ids: Tensor,
    src_pad: Tensor,
    terms: list[Terms],
    *,
    cfg: DecodeConfig,
    start_id: int = BOS_ID,
    glued: Tensor | None = None,
) -> list[list[Hypothesis]]:
    """Translate a batch so that each output holds its sentence's `terms`: per sentence the `cfg.nbest`
    best of `cfg.beam` beams, best first (outputs that miss a term, only possible when the length
    limit came first, after those that do not).

    Args:
        src_ids: (B, S) source ids; src_pad: (B, S) True at padding.
        terms: per sentence, the target terms (token ids) its output must contain; [] for none.
        glued: (V,) bool, True for the tokens that may not follow a term (`word_continuations`); None:
            any token may.
    """
    device = src_ids.device
    batch, beam = src_ids.size(0), cfg.beam
    mode, alpha = cfg.length_penalty, cfg.alpha
    max_out = output_limits(src_pad, max_len_a=cfg.max_len_a, max_len_b=cfg.max_len_b, model_max_len=model.max_len)
    first_limit, last_limit = torch.stack(max_out.aminmax()).tolist()
    steps = last_limit + 1
    first_rows = torch.arange(0, batch * beam, beam, device=device).unsqueeze(1)
    cons = ConstraintSet.build(terms, device)
    width = cons.ids.size(2)  # the tokens a term's progress is read from
    slots = cons.ids.size(1)

    alive = torch.arange(batch, device=device)
    encoded = model.encode(src_ids, src_pad)
    memory = MemoryRows(encoded, alive.repeat_interleave(beam))
    state = model.init_state(encoded, group=beam)

    scores = torch.full((batch, beam), float("-inf"), device=device)
    scores[:, 0] = 0.0
    store = FinishedStore.empty(batch, beam, device)  # outputs with every term
    fallback = FinishedStore.empty(batch, beam, device)  # outputs cut by the length limit before that
    trace = BeamTrace.empty(steps, batch, beam, device)
    history = torch.zeros((batch, beam, steps), dtype=torch.long, device=device)  # (n, K, T) open beams' tokens
    hits = torch.zeros((batch, beam, slots), dtype=torch.long, device=device)  # (n, K, C) occurrences of each term
    prefix = torch.zeros_like(hits)  # (n, K, C) partial progress on each term
    banks = torch.zeros((batch, beam), dtype=torch.long, device=device)
    ended = torch.zeros((batch, beam), dtype=torch.bool, device=device)  # the last token ended a term
    last = torch.full((batch * beam, 1), start_id, dtype=torch.long, device=device)
    ids, lengths, counts, total = cons.ids, cons.lengths, cons.counts, cons.total
    top = int(total.max()) + 2  # host sync, once: banks are 0 .. top - 2

    for step in range(steps):
        n = alive.numel()
        logits, state = model.decode_step(last, memory, state)
        logits = logits.float()
        logp = torch.log_softmax(logits, dim=-1, out=logits).view(n, beam, -1)  # (n, K, V)
        vocab = logp.size(-1)
        repeats = None
        if cfg.no_repeat_ngram > 0:
            repeats = repeated_ngram_ids(history[:, :, :step].flatten(0, 1), n=cfg.no_repeat_ngram).view(n, beam, -1)
        limits = max_out if step >= first_limit else None
        forbid_tokens_(logp, step=step, min_len=cfg.min_len, max_out=limits, banned=repeats)
        # EOS only with every term in, or at the length limit (where it is the only way out)
        unmet = (banks < total[:, None]) & (max_out != step)[:, None]
        logp[..., EOS_ID].masked_fill_(unmet, float("-inf"))
        if glued is not None:  # a term's last word is not continued
            logp.masked_fill_(ended.unsqueeze(-1) & glued, float("-inf"))

        # candidates: the 2K best extensions, each beam's best token, and each beam's next token of every term
        v1, b1, t1, s1 = select_topk(scores, logp, k=min(2 * beam, beam * vocab))
        s2, t2 = logp.max(-1)  # (n, K)
        b2 = torch.arange(beam, device=device).expand(n, -1)
        want = ids.gather(2, prefix.transpose(1, 2)).transpose(1, 2)  # (n, K, C): token after each prefix
        want = torch.where(hits < counts[:, None, :], want, PAD_ID)  # met terms want nothing (pad is -inf)
        s3 = logp.gather(2, want)
        b3 = b2.unsqueeze(-1).expand(-1, -1, slots)
        values = torch.cat([v1, scores + s2, (scores.unsqueeze(-1) + s3).flatten(1)], dim=1)  # (n, M)
        parents = torch.cat([b1, b2, b3.flatten(1)], dim=1)
        tokens = torch.cat([t1, t2, want.flatten(1)], dim=1)
        token_scores = torch.cat([s1, s2, s3.flatten(1)], dim=1)
        dedupe_(values, parents, tokens, vocab=vocab)

        # where each candidate stands on its terms once its token is added
        lookback = min(width - 1, step)
        tails = torch.cat([gather_beams(history[:, :, step - lookback : step], parents), tokens.unsqueeze(-1)], -1)
        complete, cand_prefix = term_progress(tails, ids, lengths)
        cand_hits = hits.gather(1, parents.unsqueeze(-1).expand(-1, -1, slots)) + complete
        cand_banks = banks_of(cand_hits, cand_prefix, lengths, counts)

        ends = tokens == EOS_ID
        finishing = ends & values.isfinite()
        if cfg.early_stopping:  # fairseq's rule: only an EOS among the step's K first candidates, as dealt, ends
            first = allocate(values, cand_banks, k=beam, top=top)  # (dealt over banks: a hypothesis with
            finishing &= torch.zeros_like(finishing).scatter_(1, first, True)  # every term goes first)
        met = cand_banks >= total[:, None]
        for target, chosen in ((store, finishing & met), (fallback, finishing & ~met)):
            finalize_finished(
                target, alive, values=values, is_eos=chosen, parents=parents, eos_scores=token_scores,
                length=step + 1, mode=mode, alpha=alpha,
            )  # fmt: skip

        keep_idx = allocate(values.masked_fill(ends, float("-inf")), cand_banks, k=beam, top=top)  # (n, K)
        scores = values.gather(1, keep_idx).masked_fill(ends.gather(1, keep_idx), float("-inf"))
        beam_idx, last_ids = parents.gather(1, keep_idx), tokens.gather(1, keep_idx)
        trace.record(step, alive, parents=beam_idx, tokens=last_ids, token_scores=token_scores.gather(1, keep_idx))
        history = gather_beams(history, beam_idx)
        history[:, :, step] = last_ids
        hits = cand_hits.gather(1, keep_idx.unsqueeze(-1).expand(-1, -1, slots))
        prefix = cand_prefix.gather(1, keep_idx.unsqueeze(-1).expand(-1, -1, slots))
        banks = cand_banks.gather(1, keep_idx)
        ended = complete.any(-1).gather(1, keep_idx)

        best_open = scores.max(1).values
        if cfg.early_stopping:  # K outputs with every term ended (or none is open): done, as fairseq's
            done = store.scores[alive, -1].isfinite() | best_open.isinf()
        else:
            done = is_done(best_open, store.scores[alive, -1], step=step, max_out=max_out, mode=mode, alpha=alpha)
        rows = (first_rows[:n] + beam_idx).view(-1)
        keep = (~done).nonzero().squeeze(1)  # host sync: which sentences stay in the batch
        if keep.numel() == 0:
            break
        if keep.numel() < n:
            alive, scores, max_out, last_ids = alive[keep], scores[keep], max_out[keep], last_ids[keep]
            history, hits, prefix, banks, ended = history[keep], hits[keep], prefix[keep], banks[keep], ended[keep]
            ids, lengths, counts, total = ids[keep], lengths[keep], counts[keep], total[keep]
            memory = MemoryRows(encoded, alive.repeat_interleave(beam))
            rows = rows.view(n, beam)[keep].view(-1)
        state = state.reorder(rows, same_source=keep.numel() == n)
        last = last_ids.reshape(-1, 1)

    kept = to_hypotheses(store, trace, nbest=cfg.nbest)
    cut = to_hypotheses(fallback, trace, nbest=cfg.nbest)
    return [(a + b)[: cfg.nbest] for a, b in zip(kept, cut, strict=True)]


def word_continuations(pieces: list[str]) -> list[bool]:
    """Which SentencePiece pieces continue the word before them: those that do not start a word (no
    leading U+2581) and begin with a letter or digit (punctuation may follow a term); control pieces
    (<...>) and the empty piece do not."""
    return [bool(p) and not p.startswith("\u2581") and p[0].isalnum() and not p.startswith("<") for p in pieces]


def contains(tokens: list[int] | tuple[int, ...], terms: Terms) -> bool:
    """Whether `tokens` hold every term (a repeated term as often as it is repeated; occurrences may overlap)."""
    seq = tuple(tokens)

    def occurrences(term: tuple[int, ...]) -> int:
        return sum(seq[i : i + len(term)] == term for i in range(len(seq) - len(term) + 1))

    return all(occurrences(term) >= need for term, need in Counter(t for t in terms if t).items())
