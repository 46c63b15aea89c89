"""Batched, length-normalised beam search built from small tensor steps.

A decoding time step works on all n*K rows (n unfinished sentences x K beams) at once:
`forbid_tokens_` masks the step's log-probs, `select_topk` adds each beam's best ones to the
running scores (`expand_scores`) and keeps the best 2K candidates per sentence,
`finalize_finished` moves the ones ending in EOS into a tensor store of the best K
finished hypotheses per sentence, and `is_done` applies the exact stopping rule (or, with
`decode.early_stopping`, fairseq's: only an EOS among the step's K best candidates ends a
hypothesis, and a sentence stops once K have ended; an imported fairseq model decodes so). The
driver `beam_search` only wires these together; its single host sync per step decides
which sentences leave the batch. No step allocates a tensor of the log-probs' (n*K, V)
size: on CPU, touching fresh memory of that size costs more than the work done in it.
Nor does a step copy the beams' histories: it records back-pointers (`BeamTrace`), and
finished hypotheses are spelled out from them once, after the search.

The output helpers (`Hypothesis`, `forbid_tokens_`, `repeated_ngram_ids`) are shared with the
left-to-right decoders of `greedy.py` and `sampling.py`, which import this module; it imports
neither. The length rules (penalty, output limits) are every engine's, in `lengths.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from nmt.config import DecodeConfig
from nmt.decode.lengths import LengthPenaltyMode, length_penalty, output_limits
from nmt.model import Memory, Seq2SeqModel
from nmt.tokens import BOS_ID, EOS_ID, PAD_ID


@dataclass
class Hypothesis:
    """One decoded output: `tokens` without bos/eos; `token_scores` also scores the final EOS."""

    tokens: list[int]
    score: float  # length-normalised log-prob, the value hypotheses are ranked by
    token_scores: list[float]  # log-prob of each generated token incl. EOS: len(tokens) + 1


@dataclass
class FinishedStore:
    """The best K finished hypotheses of every sentence (B rows), sorted best first, as back-pointers.

    Slot (b, j) holds `lengths[b, j]` tokens (EOS excluded): open beam `parents[b, j]` of
    sentence b after step `lengths[b, j]` - 1 (see `BeamTrace`), extended by EOS with
    log-prob `eos_scores[b, j]`. Empty slots have score -inf.
    """

    scores: Tensor  # (B, K) normalised scores
    lengths: Tensor  # (B, K) tokens before EOS
    parents: Tensor  # (B, K) the open beam that EOS extends
    eos_scores: Tensor  # (B, K) log-prob of the EOS

    @classmethod
    def empty(cls, batch: int, beam: int, device: torch.device) -> FinishedStore:
        ids = torch.zeros((batch, beam), dtype=torch.long, device=device)
        return cls(torch.full((batch, beam), float("-inf"), device=device), ids, ids.clone(), ids.float())


@dataclass
class BeamTrace:
    """Back-pointers of the open beams, one (B, K) slice per step, indexed by original sentence.

    Open beam j of sentence b after step t extends beam `parents[t, b, j]` of step t - 1 by
    token `tokens[t, b, j]` with log-prob `token_scores[t, b, j]`. A step writes one slice;
    hypotheses are spelled out by walking back once, after the search (`to_hypotheses`).
    """

    parents: Tensor  # (T, B, K)
    tokens: Tensor  # (T, B, K)
    token_scores: Tensor  # (T, B, K)

    @classmethod
    def empty(cls, steps: int, batch: int, beam: int, device: torch.device) -> BeamTrace:
        ids = torch.zeros((steps, batch, beam), dtype=torch.long, device=device)
        return cls(ids, ids.clone(), ids.float())

    def record(self, step: int, alive: Tensor, *, parents: Tensor, tokens: Tensor, token_scores: Tensor) -> None:
        """Write step `step` of the working sentences `alive` (n,); the others are (n, K)."""
        self.parents[step].index_copy_(0, alive, parents)
        self.tokens[step].index_copy_(0, alive, tokens)
        self.token_scores[step].index_copy_(0, alive, token_scores)


class MemoryRows:
    """Rows `idx` (N,) of the encoder memory, selected only when the decoder first reads them.

    A Transformer's `decode_step` reads nothing from memory (its state holds the cross-attention
    K/V and the padding), so a shrinking batch never copies its encoder output; an RNN's
    attention reads memory every step and gets the rows selected once per shrink.
    """

    def __init__(self, memory: Memory, idx: Tensor) -> None:
        self.memory, self.idx = memory, idx
        self.selected: Memory | None = None

    def rows(self) -> Memory:
        if self.selected is None:
            self.selected = self.memory.index_select(self.idx)
        return self.selected

    @property
    def src_pad(self) -> Tensor:
        return self.rows().src_pad

    def index_select(self, idx: Tensor) -> Memory:
        return self.rows().index_select(idx)

    def __getattr__(self, name: str) -> object:  # any other field of the family's memory
        return getattr(self.rows(), name)


def forbid_tokens_(
    logp: Tensor, *, step: int, min_len: int, max_out: Tensor | None, banned: Tensor | None = None
) -> Tensor:
    """Set forbidden continuations to -inf in place, leaving allowed log-probs (EOS included) unchanged.

    pad and bos are never generated; EOS is forbidden before `min_len` tokens; at a
    sentence's length limit only EOS is allowed. `banned` token ids (e.g. repeated n-grams)
    are forbidden too, except that a row left with no allowed token may end with EOS.
    Writing in place spares a copy of the (rows, V) log-probs every step, banning by id a
    (rows, V) mask. Only a row that bans at least as many ids as there are ordinary tokens
    (V - 3) can be left without one, so only then is `logp` searched for such rows (given
    finite log-probs from the model, as log_softmax of finite logits gives).

    Args:
        logp: (B, V) or (B, K, V) log-probs of token number `step` (0-based).
        max_out: (B,) length limits from `output_limits`; None when the caller knows that no
            sentence is at its limit yet, which skips a pass over `logp`.
        banned: optional ids shaped like `logp` but with any last size M (`repeated_ngram_ids`);
            PAD_ID where a row bans fewer than M.
    Returns:
        `logp`.
    """
    eos = logp[..., EOS_ID].clone()  # restored where EOS is the only way out
    logp[..., PAD_ID] = float("-inf")
    logp[..., BOS_ID] = float("-inf")
    if step < min_len:
        logp[..., EOS_ID] = float("-inf")
    allow_eos = None
    if max_out is not None:
        allow_eos = (max_out == step).view(-1, *[1] * (logp.dim() - 2))  # broadcasts like `eos`
        logp.masked_fill_(allow_eos.unsqueeze(-1), float("-inf"))
    if banned is not None and banned.size(-1) > 0:
        logp.scatter_(-1, banned, float("-inf"))
        if banned.size(-1) >= logp.size(-1) - 3:  # enough bans to leave a row without a token
            stuck = logp.amax(-1).isneginf()
            allow_eos = stuck if allow_eos is None else allow_eos | stuck
    if allow_eos is not None:
        logp[..., EOS_ID] = torch.where(allow_eos, eos, logp[..., EOS_ID])
    return logp


def repeated_ngram_ids(tokens: Tensor, *, n: int) -> Tensor:
    """Ids of the tokens that would complete an n-gram already present in the row.

    Every earlier occurrence of the row's last n-1 tokens bans the token that followed it.

    Args:
        tokens: (N, t) tokens generated so far.
    Returns:
        (N, M) long with M = max(t - n + 1, 0): one slot per earlier n-gram, PAD_ID where it
        bans nothing (pad is never generated anyway).
    """
    rows, t = tokens.shape
    if n <= 0 or t < n:
        return tokens.new_zeros((rows, 0))
    windows = tokens.unfold(1, n, 1)  # (N, t-n+1, n): every n-gram so far
    suffix = tokens[:, t - n + 1 :]  # (N, n-1): what the next token would extend
    match = (windows[:, :, :-1] == suffix[:, None, :]).all(-1)  # (N, t-n+1)
    return windows[:, :, -1].masked_fill(~match, PAD_ID)


def expand_scores(scores: Tensor, logp: Tensor) -> Tensor:
    """Scores of one-token extensions: (n, K) running + (n, K, C) step -> (n, K*C)."""
    return (scores.unsqueeze(-1) + logp).flatten(1)


def select_topk(scores: Tensor, logp: Tensor, *, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Best `k` one-token extensions per sentence of running `scores` (n, K) by step `logp` (n, K, V).

    A sentence's best k extensions can only use each beam's own best k tokens, so the step
    log-probs are cut to those (n, K, k) before the running scores are added: no (n, K*V)
    tensor is built.

    Returns:
        values (extension scores), beam index, token id and the token's log-prob, each (n, k).
    """
    top_logp, top_ids = logp.topk(min(k, logp.size(-1)), dim=-1)  # (n, K, k)
    values, flat = expand_scores(scores, top_logp).topk(k, dim=1)
    return values, flat // top_ids.size(-1), top_ids.flatten(1).gather(1, flat), top_logp.flatten(1).gather(1, flat)


def gather_beams(x: Tensor, idx: Tensor) -> Tensor:
    """Pick rows along the beam dim: x (n, K, T) by idx (n, k) -> (n, k, T)."""
    return x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.size(-1)))


def finalize_finished(
    store: FinishedStore,
    alive: Tensor,
    *,
    values: Tensor,
    is_eos: Tensor,
    parents: Tensor,
    eos_scores: Tensor,
    length: int,
    mode: LengthPenaltyMode,
    alpha: float,
) -> FinishedStore:
    """Merge this step's EOS candidates into the store rows `alive`, keeping the top K (in place).

    Args:
        alive: (n,) store row (original sentence) of each working sentence.
        values: (n, C) raw scores of the candidates; is_eos (n, C) marks the ones ending in EOS.
        parents: (n, C) the open beam each candidate extends; eos_scores (n, C) the EOS log-probs.
        length: |y| of every candidate (EOS included).
    """
    beam = store.scores.size(1)
    lp = length_penalty(torch.full((), length, device=values.device), mode=mode, alpha=alpha)
    new_scores = torch.where(is_eos, values / lp, float("-inf"))
    merged = torch.cat([store.scores[alive], new_scores], dim=1)  # (n, K + C)
    best, idx = merged.topk(beam, dim=1)

    def pick(old: Tensor, new: Tensor) -> None:
        chosen = torch.cat([old[alive], new], dim=1).gather(1, idx)
        old.index_copy_(0, alive, chosen)  # in place: only the n working rows are written, not all B

    pick(store.lengths, torch.full_like(parents, length - 1))
    pick(store.parents, parents)
    pick(store.eos_scores, eos_scores)
    store.scores.index_copy_(0, alive, best)
    return store


def is_done(
    best_open: Tensor,
    worst_finished: Tensor,
    *,
    step: int,
    max_out: Tensor,
    mode: LengthPenaltyMode,
    alpha: float,
) -> Tensor:
    """Exact stopping rule: no open hypothesis can beat the K-th best finished one.

    An open hypothesis with raw score s <= 0 and `step` + 1 tokens can only finish at
    lengths L' in [step + 2, max_out + 1] with a raw score <= s, so its best reachable
    normalised score is max over L' of s / lp(L'); lp is monotone in L', so the maximum is
    at an end of that range (s / lp(max_out + 1) for alpha >= 0). With fewer than K
    finished, `worst_finished` is -inf and only a sentence without open hypotheses stops.

    Args:
        best_open: (n,) best raw score among the open beams (-inf when none is left).
        worst_finished: (n,) K-th best finished normalised score.
        max_out: (n,) length limits.
    """
    shortest = length_penalty(torch.full_like(max_out, step + 2), mode=mode, alpha=alpha)
    longest = length_penalty(max_out + 1, mode=mode, alpha=alpha)
    bound = torch.maximum(best_open / shortest, best_open / longest)
    return bound <= worst_finished


def to_hypotheses(store: FinishedStore, trace: BeamTrace, *, nbest: int) -> list[list[Hypothesis]]:
    """Spell out the store's hypotheses (once, after the search): nbest per sentence, best first."""
    stored = (store.scores, store.lengths, store.parents, store.eos_scores)
    scores, lengths, parents, eos_scores = (x[:, :nbest].tolist() for x in stored)
    steps = max((n for row in lengths for n in row), default=0)
    parent_of, token_of, score_of = (x[:steps].tolist() for x in (trace.parents, trace.tokens, trace.token_scores))

    def spell(b: int, j: int) -> Hypothesis:
        length, beam = lengths[b][j], parents[b][j]
        tokens, token_scores = [0] * length, [0.0] * length + [eos_scores[b][j]]
        for t in range(length - 1, -1, -1):  # walk back from the beam that EOS extends
            tokens[t], token_scores[t], beam = token_of[t][b][beam], score_of[t][b][beam], parent_of[t][b][beam]
        return Hypothesis(tokens, scores[b][j], token_scores)

    return [[spell(b, j) for j, score in enumerate(row) if score != float("-inf")] for b, row in enumerate(scores)]


@torch.inference_mode()
def beam_search(
    model: Seq2SeqModel, src_ids: Tensor, src_pad: Tensor, *, cfg: DecodeConfig, start_id: int = BOS_ID
) -> list[list[Hypothesis]]:
    """Translate a batch: per sentence the `cfg.nbest` best of `cfg.beam` beams, best first.

    The driver works on all sentences x beams at once, for any beam size (1 included: it
    then also keeps every EOS candidate it passes, so it may beat greedy search). The
    encoder runs once; its memory is repeated to B*K rows and the decoder state (with the
    cross-attention K/V) is built once from it. Each step keeps the best K non-EOS
    extensions per sentence, recording only their back-pointers, and merges the EOS ones
    into the finished store; finished sentences are removed from the working tensors.
    Token histories are kept only for n-gram blocking.

    Args:
        src_ids: (B, S) source token ids; src_pad: (B, S) True at padding.
        cfg: beam, nbest, length limits, min_len, length penalty and alpha, no_repeat_ngram.
        start_id: the decoder's first input (BOS, or a multilingual model's target language token).
    """
    device = src_ids.device
    batch, beam = src_ids.size(0), cfg.beam
    mode, alpha = cfg.length_penalty, cfg.alpha
    max_out = output_limits(src_pad, max_len_a=cfg.max_len_a, max_len_b=cfg.max_len_b, model_max_len=model.max_len)
    first_limit, last_limit = torch.stack(max_out.aminmax()).tolist()  # host sync, once before the loop
    steps = last_limit + 1  # tokens incl. EOS
    first_rows = torch.arange(0, batch * beam, beam, device=device).unsqueeze(1)  # (B, 1) each sentence's row 0

    alive = torch.arange(batch, device=device)  # (n,) original sentence of each working row
    encoded = model.encode(src_ids, src_pad)
    memory = MemoryRows(encoded, alive.repeat_interleave(beam))
    state = model.init_state(encoded, group=beam)  # per-sentence cross-attention K/V, beam rows each

    scores = torch.full((batch, beam), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start identical: only the first may expand
    store = FinishedStore.empty(batch, beam, device)
    trace = BeamTrace.empty(steps, batch, beam, device)
    # (n, K, T) tokens of the open beams, for n-gram blocking only
    history = torch.zeros((batch, beam, steps), dtype=torch.long, device=device) if cfg.no_repeat_ngram > 0 else None
    last = torch.full((batch * beam, 1), start_id, dtype=torch.long, device=device)

    for step in range(steps):
        n = alive.numel()
        logits, state = model.decode_step(last, memory, state)
        logits = logits.float()
        # in place (the module docstring says why); safe, as each row is reduced before it is written
        logp = torch.log_softmax(logits, dim=-1, out=logits).view(n, beam, -1)  # (n, K, V)
        repeats = None
        if history is not None:  # (n, K, M) ids that would complete an n-gram already generated
            repeats = repeated_ngram_ids(history[:, :, :step].flatten(0, 1), n=cfg.no_repeat_ngram).view(n, beam, -1)
        limits = max_out if step >= first_limit else None  # none reached yet: skip that pass over logp
        forbid_tokens_(logp, step=step, min_len=cfg.min_len, max_out=limits, banned=repeats)

        values, beam_idx, token_ids, step_scores = select_topk(scores, logp, k=2 * beam)  # each (n, 2K)
        ends = token_ids == EOS_ID
        finishing = ends & values.isfinite()
        if cfg.early_stopping:  # fairseq's rule: only an EOS among the step's K best candidates ends a hypothesis
            finishing[:, beam:] = False
        store = finalize_finished(
            store, alive, values=values, is_eos=finishing, parents=beam_idx,
            eos_scores=step_scores, length=step + 1, mode=mode, alpha=alpha,
        )  # fmt: skip

        # at most K of the 2K candidates end in EOS (one per beam), so K open ones remain
        scores, keep_idx = values.masked_fill(ends, float("-inf")).topk(beam, dim=1)
        beam_idx, last_ids = beam_idx.gather(1, keep_idx), token_ids.gather(1, keep_idx)
        trace.record(step, alive, parents=beam_idx, tokens=last_ids, token_scores=step_scores.gather(1, keep_idx))
        if history is not None:
            history = gather_beams(history, beam_idx)
            history[:, :, step] = last_ids

        if cfg.early_stopping:  # K hypotheses ended (or none is open): done, as fairseq and HF early_stopping
            done = store.scores[alive, -1].isfinite() | scores[:, 0].isinf()
        else:
            done = is_done(scores[:, 0], store.scores[alive, -1], step=step, max_out=max_out, mode=mode, alpha=alpha)
        rows = (first_rows[:n] + beam_idx).view(-1)
        keep = (~done).nonzero().squeeze(1)  # host sync: which sentences stay in the batch
        if keep.numel() == 0:
            break
        if keep.numel() < n:
            alive, scores, max_out, last_ids = alive[keep], scores[keep], max_out[keep], last_ids[keep]
            history = None if history is None else history[keep]
            memory = MemoryRows(encoded, alive.repeat_interleave(beam))  # selected only if the decoder reads it
            rows = rows.view(n, beam)[keep].view(-1)
        state = state.reorder(rows, same_source=keep.numel() == n)
        last = last_ids.reshape(-1, 1)

    return to_hypotheses(store, trace, nbest=cfg.nbest)
