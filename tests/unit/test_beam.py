"""Beam search and greedy search against independent oracles.

The oracles use only the teacher-forced `model.forward`, never `decode_step`: one
enumerates every possible output of a tiny random model (real tokens unk, 4, 5), the
other walks left to right, re-running `forward` on each growing prefix.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import Tensor

from nmt.config import DecodeConfig, ModelConfig
from nmt.decode.beam import (
    Hypothesis,
    beam_search,
    forbid_tokens_,
    repeated_ngram_ids,
    select_topk,
)
from nmt.decode.greedy import greedy_search
from nmt.decode.lengths import length_penalty, output_limits
from nmt.decode.search import search_batch
from nmt.tokens import BOS_ID, EOS_ID, PAD_ID
from tests.unit.toy_models import ToySeq2Seq

torch.set_num_threads(1)

VOCAB = 6
REAL_TOKENS = (1, 4, 5)  # unk and the two ordinary tokens; pad, bos and eos are never inside y
MODES = [("none", 1.0), ("average", 1.0), ("average", 0.5), ("average", 1.5), ("gnmt", 0.6), ("gnmt", 1.0)]
SRC_ROWS = [[4, 5, 1, 4, 5], [5, 4], [1, 5, 4, 4]]


def padded_batch(rows: list[list[int]]) -> tuple[Tensor, Tensor]:
    width = max(len(r) for r in rows)
    src_ids = torch.tensor([r + [PAD_ID] * (width - len(r)) for r in rows])
    return src_ids, src_ids == PAD_ID


MODEL_CONFIGS = {
    "transformer": dict(preset="tiny", d_model=16, n_heads=2, ffn_dim=32, enc_layers=1, dec_layers=1),
    "lstm_luong": dict(arch="rnn", cell="lstm", attention="luong_general", d_model=16, enc_layers=2, dec_layers=2),
    "gru_bahdanau": dict(arch="rnn", cell="gru", attention="bahdanau", d_model=16, enc_layers=1, dec_layers=1),
    "lstm_none": dict(arch="rnn", cell="lstm", attention="none", d_model=16, enc_layers=1, dec_layers=1),
}


def tiny_model(name: str, vocab: int = VOCAB) -> torch.nn.Module:
    """The toy model or a MODEL_CONFIGS family, randomly initialised (seed 0), in eval mode."""
    torch.manual_seed(0)
    if name == "toy":
        return ToySeq2Seq(vocab_size=vocab, max_len=16).eval()
    from nmt.model import build_model

    cfg = ModelConfig(**MODEL_CONFIGS[name], max_len=16, dropout=0.0)  # type: ignore[arg-type]
    return build_model(cfg, src_vocab_size=vocab, tgt_vocab_size=vocab).eval()


@pytest.fixture(params=["toy", *MODEL_CONFIGS])
def model(request: pytest.FixtureRequest) -> torch.nn.Module:
    return tiny_model(request.param)


def settings(**kw: object) -> DecodeConfig:
    """Decode settings for the tests: beam 1 (greedy) unless given."""
    return DecodeConfig(**{"beam": 1, **kw})  # type: ignore[arg-type]


def reference_lp(length: int, mode: str, alpha: float) -> float:
    if mode == "none":
        return 1.0
    if mode == "average":
        return length**alpha
    return ((5 + length) / 6) ** alpha


@torch.inference_mode()
def output_logprobs(model: torch.nn.Module, src: list[int], outputs: list[list[int]]) -> list[list[float]]:
    """Teacher-forced log-probs (`model.forward`) of each output's tokens and its EOS, given `src`;
    the outputs are all of one length."""
    tgt_in = torch.tensor([[BOS_ID, *y] for y in outputs])
    tgt_out = torch.tensor([[*y, EOS_ID] for y in outputs])
    src_ids = torch.tensor([src] * len(outputs))
    logits = model(src_ids, src_ids == PAD_ID, tgt_in)
    return torch.log_softmax(logits.float(), dim=-1).gather(2, tgt_out.unsqueeze(-1)).squeeze(-1).tolist()


@torch.inference_mode()
def brute_force(
    model: torch.nn.Module, src: list[int], *, max_out: int, min_len: int, mode: str, alpha: float
) -> tuple[list[int], float, list[float]]:
    """Best (tokens, normalised score, token log-probs) over every output of allowed length."""
    best: tuple[list[int], float, list[float]] | None = None
    for length in range(min(min_len, max_out), max_out + 1):
        outputs = [list(y) for y in itertools.product(REAL_TOKENS, repeat=length)]
        for y, row in zip(outputs, output_logprobs(model, src, outputs), strict=True):
            score = math.fsum(row) / reference_lp(length + 1, mode, alpha)
            if best is None or score > best[1]:
                best = (y, score, row)
    assert best is not None
    return best


@torch.inference_mode()
def forward_token_scores(model: torch.nn.Module, src: list[int], tokens: list[int]) -> list[float]:
    """Teacher-forced log-probs of `tokens` + EOS given `src`, from `model.forward`."""
    src_ids = torch.tensor([src])
    tgt_in = torch.tensor([[BOS_ID] + tokens])
    logits = model(src_ids, src_ids == PAD_ID, tgt_in)
    logp = torch.log_softmax(logits.float(), dim=-1)[0]
    return logp.gather(1, torch.tensor([tokens + [EOS_ID]]).T).squeeze(1).tolist()


# ---------------------------------------------------------------- pure helpers


def test_length_penalty_hand_computed() -> None:
    lengths = torch.tensor([1, 2, 4])
    torch.testing.assert_close(length_penalty(lengths, mode="none", alpha=0.7), torch.ones(3))
    torch.testing.assert_close(length_penalty(lengths, mode="average", alpha=1.0), torch.tensor([1.0, 2.0, 4.0]))
    torch.testing.assert_close(length_penalty(lengths, mode="average", alpha=0.5), torch.tensor([1.0, 1.4142135, 2.0]))
    torch.testing.assert_close(length_penalty(lengths, mode="gnmt", alpha=1.0), torch.tensor([1.0, 7 / 6, 1.5]))
    torch.testing.assert_close(
        length_penalty(lengths, mode="gnmt", alpha=0.6), torch.tensor([1.0, 1.0969026, 1.2754245])
    )
    with pytest.raises(ValueError, match="unknown length penalty"):
        length_penalty(lengths, mode="bogus", alpha=1.0)  # type: ignore[arg-type]


def test_output_limits_and_forbidden_tokens() -> None:
    src_ids, src_pad = padded_batch([[4] * 5, [4] * 20, [4]])
    limits = output_limits(src_pad, max_len_a=1.2, max_len_b=2, model_max_len=16)
    assert limits.tolist() == [8, 15, 3]  # floor(1.2*5+2); capped at max_len-1; floor(3.2)
    logp = torch.zeros(3, VOCAB)
    masked = forbid_tokens_(logp, step=0, min_len=1, max_out=torch.tensor([0, 5, 5]))
    assert masked is logp  # in place
    assert masked[0].isfinite().tolist() == [False, False, False, True, False, False]  # limit: EOS only
    assert masked[1].isfinite().tolist() == [False, True, False, False, True, True]  # min_len: no EOS
    assert masked[1, 1] == 0.0  # allowed tokens keep their log-prob
    everything = torch.tensor([0, 1, 3, 4, 5]).expand(3, 5)  # every token id but bos
    masked = forbid_tokens_(
        torch.zeros(3, VOCAB), step=0, min_len=1, max_out=torch.tensor([5, 5, 5]), banned=everything
    )
    assert masked.isfinite().nonzero()[:, 1].tolist() == [EOS_ID] * 3  # stuck rows may still end
    masked = forbid_tokens_(torch.zeros(2, 3, VOCAB), step=1, min_len=1, max_out=None)  # no row at its limit
    assert masked.isfinite().all(-1).tolist() == [[False] * 3] * 2
    assert masked[..., [PAD_ID, BOS_ID]].isinf().all() and masked[..., EOS_ID].isfinite().all()


@pytest.mark.parametrize("vocab", [50, 3])
def test_select_topk_matches_ranking_all_extensions(vocab: int) -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(4, 3, generator=g) - torch.tensor([0.0, 2.0, 4.0])
    scores[0, 1:] = float("-inf")  # beams not yet open, as at the first step
    logp = torch.randn(4, 3, vocab, generator=g).log_softmax(-1)
    values, beam_idx, token_ids, token_logp = select_topk(scores, logp, k=6)
    expected, flat = (scores.unsqueeze(-1) + logp).flatten(1).topk(6, dim=1)
    torch.testing.assert_close(values, expected, rtol=0, atol=0)
    finite = expected.isfinite()  # ties among -inf may come in any order
    assert torch.equal(beam_idx[finite], (flat // vocab)[finite])
    assert torch.equal(token_ids[finite], (flat % vocab)[finite])
    assert torch.equal(token_logp[finite], logp.flatten(1).gather(1, flat)[finite])


def test_repeated_ngram_ids_hand_example() -> None:
    tokens = torch.tensor([[4, 5, 1, 4], [4, 5, 4, 5]])
    banned = repeated_ngram_ids(tokens, n=2)
    assert set(banned[0].tolist()) - {PAD_ID} == {5}  # "4 5" exists, last token is 4
    assert set(banned[1].tolist()) - {PAD_ID} == {4}  # "5 4" exists, last token is 5
    assert repeated_ngram_ids(tokens[:, :1], n=2).numel() == 0


# ---------------------------------------------------------------- against the exhaustive oracle


@pytest.mark.parametrize("min_len", [1, 2])
@pytest.mark.parametrize(("mode", "alpha"), MODES)
def test_wide_beam_matches_exhaustive_search(model: torch.nn.Module, mode: str, alpha: float, min_len: int) -> None:
    src_ids, src_pad = padded_batch(SRC_ROWS)
    max_out = 3  # max_len_a=0, max_len_b=3: 1 + 3 + 9 + 27 = 40 possible prefixes
    cfg = settings(beam=40, max_len_a=0.0, max_len_b=max_out, min_len=min_len, length_penalty=mode, alpha=alpha)
    results = beam_search(model, src_ids, src_pad, cfg=cfg)
    for src, hyps in zip(SRC_ROWS, results, strict=True):
        tokens, score, token_scores = brute_force(model, src, max_out=max_out, min_len=min_len, mode=mode, alpha=alpha)
        assert hyps[0].tokens == tokens
        assert hyps[0].score == pytest.approx(score, abs=1e-5)
        assert hyps[0].token_scores == pytest.approx(token_scores, abs=1e-5)


@pytest.mark.parametrize("beam_size", [1, 2, 3])
@pytest.mark.parametrize(("mode", "alpha"), MODES[:3] + MODES[4:5])
def test_narrow_beam_never_beats_optimum(model: torch.nn.Module, beam_size: int, mode: str, alpha: float) -> None:
    src_ids, src_pad = padded_batch(SRC_ROWS)
    cfg = settings(beam=beam_size, max_len_a=0.0, max_len_b=4, length_penalty=mode, alpha=alpha)
    results = search_batch(model, src_ids, src_pad, cfg=cfg)  # beam 1: greedy
    for src, hyps in zip(SRC_ROWS, results, strict=True):
        _, optimum, _ = brute_force(model, src, max_out=4, min_len=1, mode=mode, alpha=alpha)
        hyp = hyps[0]
        assert hyp.score <= optimum + 1e-5
        assert hyp.token_scores == pytest.approx(forward_token_scores(model, src, hyp.tokens), abs=1e-5)
        assert hyp.score == pytest.approx(sum(hyp.token_scores) / reference_lp(len(hyp.tokens) + 1, mode, alpha))


# ---------------------------------------------------------------- against the left-to-right oracle


@torch.inference_mode()
def walk_left_to_right(
    model: torch.nn.Module, src: list[int], *, max_out: int, min_len: int
) -> list[tuple[list[int], list[float], float, int]]:
    """Follow the best non-EOS token from `forward` on each growing prefix, up to `max_out` tokens.

    Returns per prefix: (tokens, their log-probs, EOS log-prob or -inf where EOS is not
    allowed, EOS's rank among the allowed tokens: 0 = most likely).
    """
    prefix: list[int] = []
    prefix_logp: list[float] = []
    walk = []
    src_ids = torch.tensor([src])
    while True:
        logits = model(src_ids, src_ids == PAD_ID, torch.tensor([[BOS_ID] + prefix]))[0, -1]
        logp = torch.log_softmax(logits.float(), dim=-1).tolist()
        eos_allowed = len(prefix) >= min_len or len(prefix) == max_out
        real = sorted(REAL_TOKENS, key=lambda t: -logp[t]) if len(prefix) < max_out else []
        eos_rank = sum(logp[t] > logp[EOS_ID] for t in real)
        walk.append((list(prefix), list(prefix_logp), logp[EOS_ID] if eos_allowed else -math.inf, eos_rank))
        if not real:
            return walk
        prefix.append(real[0])
        prefix_logp.append(logp[real[0]])


def finished(walk_step: tuple[list[int], list[float], float, int], mode: str, alpha: float) -> Hypothesis:
    tokens, logps, eos_logp, _ = walk_step
    token_scores = logps + [eos_logp]
    return Hypothesis(tokens, math.fsum(token_scores) / reference_lp(len(tokens) + 1, mode, alpha), token_scores)


def max_out_of(src: list[int], *, a: float, b: int, model: torch.nn.Module) -> int:
    return min(math.floor(a * len(src) + b), model.max_len - 1)


@pytest.mark.parametrize("min_len", [0, 2])
@pytest.mark.parametrize(("mode", "alpha"), MODES)
def test_greedy_matches_argmax_oracle(model: torch.nn.Module, mode: str, alpha: float, min_len: int) -> None:
    """Greedy ends at the first prefix whose most likely allowed token is EOS."""
    src_ids, src_pad = padded_batch(SRC_ROWS)
    cfg = settings(max_len_a=1.0, max_len_b=3, min_len=min_len, length_penalty=mode, alpha=alpha)
    greedy = greedy_search(model, src_ids, src_pad, cfg=cfg)
    for src, hyp in zip(SRC_ROWS, greedy, strict=True):
        walk = walk_left_to_right(model, src, max_out=max_out_of(src, a=1.0, b=3, model=model), min_len=min_len)
        expected = finished(next(s for s in walk if s[2] > -math.inf and s[3] == 0), mode, alpha)
        assert hyp.tokens == expected.tokens
        assert hyp.score == pytest.approx(expected.score, abs=1e-5)
        assert hyp.token_scores == pytest.approx(expected.token_scores, abs=1e-5)


@pytest.mark.parametrize(("mode", "alpha"), MODES)
def test_beam_driver_at_one_beam_against_greedy_and_oracle(model: torch.nn.Module, mode: str, alpha: float) -> None:
    """K=1 keeps the best non-EOS token open, like greedy, but also finishes every EOS among
    the 2K=2 best candidates of each step: it returns the best of those, never worse than greedy,
    and greedy's own hypothesis when that is the best of them."""
    src_ids, src_pad = padded_batch(SRC_ROWS)
    cfg = settings(max_len_a=1.0, max_len_b=3, min_len=2, length_penalty=mode, alpha=alpha)
    greedy = greedy_search(model, src_ids, src_pad, cfg=cfg)
    driver = beam_search(model, src_ids, src_pad, cfg=cfg)
    for src, hyp, (best,) in zip(SRC_ROWS, greedy, driver, strict=True):
        walk = walk_left_to_right(model, src, max_out=max_out_of(src, a=1.0, b=3, model=model), min_len=2)
        candidates = [finished(s, mode, alpha) for s in walk if s[2] > -math.inf and s[3] <= 1]
        expected = max(candidates, key=lambda h: h.score)
        assert best.tokens == expected.tokens
        assert best.score == pytest.approx(expected.score, abs=1e-5)
        assert best.token_scores == pytest.approx(expected.token_scores, abs=1e-5)
        assert best.score >= hyp.score - 1e-6
        if expected.tokens == hyp.tokens:  # greedy's end is the best EOS candidate on the path
            assert best.tokens == hyp.tokens
            assert best.score == pytest.approx(hyp.score, abs=1e-6)
            assert best.token_scores == pytest.approx(hyp.token_scores, abs=1e-6)


@pytest.mark.parametrize(("mode", "alpha"), MODES[:2] + MODES[4:5])
def test_beam_driver_at_one_beam_equals_greedy_when_the_length_is_fixed(
    model: torch.nn.Module, mode: str, alpha: float
) -> None:
    """With min_len = max length, EOS is allowed only at the end: no other candidate exists."""
    src_ids, src_pad = padded_batch(SRC_ROWS)
    cfg = settings(max_len_a=0.0, max_len_b=5, min_len=5, length_penalty=mode, alpha=alpha)
    greedy = greedy_search(model, src_ids, src_pad, cfg=cfg)
    driver = beam_search(model, src_ids, src_pad, cfg=cfg)
    for hyp, (best,) in zip(greedy, driver, strict=True):
        assert len(hyp.tokens) == 5 and best.tokens == hyp.tokens
        assert best.score == pytest.approx(hyp.score, abs=1e-6)
        assert best.token_scores == pytest.approx(hyp.token_scores, abs=1e-6)


# ---------------------------------------------------------------- cross-checks between decoders


@pytest.mark.parametrize("beam_size", [1, 4])
def test_batched_equals_one_at_a_time(model: torch.nn.Module, beam_size: int) -> None:
    rows = SRC_ROWS + [[4, 4, 5, 1, 5, 4, 1]]
    src_ids, src_pad = padded_batch(rows)
    cfg = settings(beam=beam_size, max_len_a=1.0, max_len_b=2, nbest=1)
    batched = search_batch(model, src_ids, src_pad, cfg=cfg)
    for row, (hyp,) in zip(rows, batched, strict=True):
        alone_ids, alone_pad = padded_batch([row])
        ((alone,),) = search_batch(model, alone_ids, alone_pad, cfg=cfg)
        assert hyp.tokens == alone.tokens
        assert hyp.score == pytest.approx(alone.score, abs=1e-4)
        assert len(hyp.tokens) <= len(row) + 2


def test_nbest_distinct_and_sorted(model: torch.nn.Module) -> None:
    src_ids, src_pad = padded_batch(SRC_ROWS)
    results = beam_search(model, src_ids, src_pad, cfg=settings(beam=5, nbest=4, max_len_a=0.0, max_len_b=5))
    for src, hyps in zip(SRC_ROWS, results, strict=True):
        assert len(hyps) == 4
        assert len({tuple(h.tokens) for h in hyps}) == 4
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        for h in hyps:
            assert set(h.tokens) <= set(REAL_TOKENS)
            assert h.token_scores == pytest.approx(forward_token_scores(model, src, h.tokens), abs=1e-5)
            assert h.score == pytest.approx(sum(h.token_scores) / len(h.token_scores), abs=1e-5)


@pytest.mark.parametrize("decoder", ["beam 1", "beam 4", "greedy"])
def test_no_repeat_ngram(model: torch.nn.Module, decoder: str) -> None:
    src_ids, src_pad = padded_batch(SRC_ROWS)
    beam = 4 if decoder == "beam 4" else 1
    cfg = settings(beam=beam, nbest=beam, max_len_a=0.0, max_len_b=12, min_len=8, no_repeat_ngram=2)
    if decoder == "greedy":
        results = [[h] for h in greedy_search(model, src_ids, src_pad, cfg=cfg)]
    else:
        results = search_batch(model, src_ids, src_pad, cfg=cfg)  # beam 1 with blocking: the driver
    for src, hyps in zip(SRC_ROWS, results, strict=True):
        assert len(hyps) == beam
        for hyp in hyps:
            assert hyp.token_scores == pytest.approx(forward_token_scores(model, src, hyp.tokens), abs=1e-5)
            bigrams = list(zip(hyp.tokens, hyp.tokens[1:], strict=False))
            assert len(bigrams) == len(set(bigrams)), hyp.tokens


# ---------------------------------------------------------------- fairseq's stopping rule (decode.early_stopping)


@torch.inference_mode()
def fairseq_beam_reference(
    model: torch.nn.Module, src: list[int], *, beam: int, max_out: int, min_len: int, mode: str, alpha: float
) -> tuple[list[int], float]:
    """fairseq's SequenceGenerator, written out one hypothesis at a time with full forward passes: each
    step ranks the 2K best extensions of the open hypotheses; an EOS among the first K ranks ends a
    hypothesis (scored sum / lp(|y|)) while fewer than K have ended; the K best other extensions stay
    open; a sentence is done once K have ended. The best ended hypothesis (tokens, score)."""
    open_hyps: list[tuple[list[int], float]] = [([], 0.0)]
    ended: list[tuple[list[int], float]] = []
    for step in range(max_out + 1):
        cands = []
        for tokens, score in open_hyps:
            src_ids, tgt_in = torch.tensor([src]), torch.tensor([[BOS_ID, *tokens]])
            logp = torch.log_softmax(model(src_ids, src_ids == PAD_ID, tgt_in).float(), -1)[0, -1].tolist()
            for v, lp in enumerate(logp):
                if v in (PAD_ID, BOS_ID) or (v == EOS_ID and step < min_len) or (v != EOS_ID and step == max_out):
                    continue
                cands.append((score + lp, tokens, v))
        cands.sort(key=lambda c: -c[0])
        cands = cands[: 2 * beam]
        for rank, (score, tokens, v) in enumerate(cands):
            if v == EOS_ID and rank < beam and len(ended) < beam:
                ended.append((tokens, score / reference_lp(len(tokens) + 1, mode, alpha)))
        if len(ended) >= beam:
            break
        open_hyps = [(tokens + [v], score) for score, tokens, v in cands if v != EOS_ID][:beam]
    return max(ended, key=lambda e: e[1])


@pytest.mark.parametrize("beam_size", [2, 3])
@pytest.mark.parametrize(("mode", "alpha"), [("average", 1.0), ("gnmt", 0.6)])
def test_early_stopping_is_fairseqs_search(model: torch.nn.Module, beam_size: int, mode: str, alpha: float) -> None:
    src_ids, src_pad = padded_batch(SRC_ROWS)
    cfg = settings(beam=beam_size, max_len_a=0.0, max_len_b=6, length_penalty=mode, alpha=alpha, early_stopping=True)
    results = beam_search(model, src_ids, src_pad, cfg=cfg)
    for src, hyps in zip(SRC_ROWS, results, strict=True):
        tokens, score = fairseq_beam_reference(model, src, beam=beam_size, max_out=6, min_len=1, mode=mode, alpha=alpha)
        assert hyps[0].tokens == tokens
        assert hyps[0].score == pytest.approx(score, abs=1e-5)
