"""Lexically constrained beam search against an exhaustive oracle.

The oracle scores every output of a tiny random model (four real tokens: unk, 4, 5, 6; up to
four tokens long) with the teacher-forced `model.forward`, keeps those that contain the terms
(checked here, not by the code under test) and takes the best.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from nmt.config import DecodeConfig
from nmt.decode.beam import beam_search
from nmt.decode.constrained import allocate, constrained_beam_search, term_progress
from nmt.decode.search import search_batch
from tests.unit.test_beam import (
    MODEL_CONFIGS,
    forward_token_scores,
    output_logprobs,
    padded_batch,
    reference_lp,
    tiny_model,
)

torch.set_num_threads(1)

REAL = (1, 4, 5, 6)  # vocabulary 4: unk and three ordinary tokens
VOCAB = 7  # with pad, bos, eos
SRC_ROWS = [[4, 5, 1, 6, 5], [5, 6], [1, 5, 4, 4]]
MAX_OUT = 4
TERM_SETS = [
    [(6,)],
    [(5, 6)],
    [(4,), (6, 5)],
    [(5,), (5,)],  # a term required twice
    [(6, 6, 4)],
    [(5, 6), (5, 4)],  # terms that start alike
]


@pytest.fixture(params=["toy", *MODEL_CONFIGS])
def model(request: pytest.FixtureRequest) -> torch.nn.Module:
    return tiny_model(request.param, VOCAB)


def holds(tokens: tuple[int, ...], terms: list[tuple[int, ...]]) -> bool:
    """Every term occurs in `tokens`, each as often as it is listed (occurrences may overlap)."""
    for term in set(terms):
        found = sum(tokens[i : i + len(term)] == term for i in range(len(tokens) - len(term) + 1))
        if found < terms.count(term):
            return False
    return True


@torch.inference_mode()
def exhaustive(
    model: torch.nn.Module, src: list[int], terms: list[tuple[int, ...]], *, mode: str, alpha: float
) -> tuple[list[int], float] | None:
    """Best (tokens, normalised score) over the outputs of 1..MAX_OUT tokens that hold the terms."""
    best: tuple[list[int], float] | None = None
    for length in range(1, MAX_OUT + 1):
        outputs = [list(y) for y in itertools.product(REAL, repeat=length) if holds(y, terms)]
        if not outputs:
            continue
        for y, row in zip(outputs, output_logprobs(model, src, outputs), strict=True):
            score = math.fsum(row) / reference_lp(length + 1, mode, alpha)
            if best is None or score > best[1]:
                best = (list(y), score)
    return best


def settings(beam: int, **kw: object) -> DecodeConfig:
    return DecodeConfig(beam=beam, max_len_a=0.0, max_len_b=MAX_OUT, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("mode", "alpha"), [("average", 1.0), ("none", 1.0), ("gnmt", 0.6)])
def test_wide_beam_equals_exhaustive_search_over_outputs_with_the_terms(
    model: torch.nn.Module, mode: str, alpha: float
) -> None:
    # 4**3 = 64 open prefixes of 3 tokens give at most 256 non-EOS candidates: a beam of 256 keeps every
    # candidate whatever its bank, so the search is exhaustive
    src_ids, src_pad = padded_batch(SRC_ROWS)
    cfg = settings(256, length_penalty=mode, alpha=alpha)
    for terms in TERM_SETS:
        results = constrained_beam_search(model, src_ids, src_pad, [terms] * len(SRC_ROWS), cfg=cfg)
        for src, hyps in zip(SRC_ROWS, results, strict=True):
            expected = exhaustive(model, src, terms, mode=mode, alpha=alpha)
            assert expected is not None
            assert hyps[0].tokens == expected[0], terms
            assert hyps[0].score == pytest.approx(expected[1], abs=1e-5)


@pytest.mark.parametrize("early_stopping", [False, True])
@pytest.mark.parametrize("beam", [1, 2, 5])
def test_narrow_beam_meets_the_terms_and_never_beats_the_optimum(
    model: torch.nn.Module, beam: int, early_stopping: bool
) -> None:
    src_ids, src_pad = padded_batch(SRC_ROWS)
    cfg = settings(beam, early_stopping=early_stopping)
    for terms in TERM_SETS:
        results = constrained_beam_search(model, src_ids, src_pad, [terms] * len(SRC_ROWS), cfg=cfg)
        for src, hyps in zip(SRC_ROWS, results, strict=True):
            expected = exhaustive(model, src, terms, mode="average", alpha=1.0)
            assert expected is not None
            hyp = hyps[0]
            assert holds(tuple(hyp.tokens), terms), (terms, hyp.tokens)
            assert hyp.score <= expected[1] + 1e-5
            token_scores = forward_token_scores(model, src, hyp.tokens)
            assert hyp.token_scores == pytest.approx(token_scores, abs=1e-5)
            assert hyp.score == pytest.approx(math.fsum(token_scores) / (len(hyp.tokens) + 1), abs=1e-5)


def test_sentences_without_terms_decode_as_plain_beam_search_in_a_shared_batch(model: torch.nn.Module) -> None:
    src_ids, src_pad = padded_batch(SRC_ROWS)
    cfg = settings(4, nbest=3)
    plain = beam_search(model, src_ids, src_pad, cfg=cfg)
    mixed = constrained_beam_search(model, src_ids, src_pad, [[], [(6, 5)], []], cfg=cfg)
    for b in (0, 2):
        assert [h.tokens for h in mixed[b]] == [h.tokens for h in plain[b]]
        assert [h.score for h in mixed[b]] == pytest.approx([h.score for h in plain[b]], abs=1e-6)
    assert holds(tuple(mixed[1][0].tokens), [(6, 5)])


def test_a_term_that_cannot_fit_still_gives_an_output(model: torch.nn.Module) -> None:
    src_ids, src_pad = padded_batch(SRC_ROWS)
    results = constrained_beam_search(model, src_ids, src_pad, [[(4, 5, 6, 4, 5)]] * 3, cfg=settings(3, nbest=2))
    for hyps in results:  # five tokens cannot fit in four: the best outputs cut by the limit
        assert len(hyps) == 2
        assert all(len(h.tokens) == MAX_OUT for h in hyps)
        assert hyps[0].score >= hyps[1].score


def test_search_batch_uses_the_terms_for_any_beam() -> None:
    model = tiny_model("toy", VOCAB)
    src_ids, src_pad = padded_batch(SRC_ROWS)
    for beam in (1, 3):
        results = search_batch(model, src_ids, src_pad, cfg=settings(beam), terms=[[(6, 6)], [], [(4,)]])
        assert holds(tuple(results[0][0].tokens), [(6, 6)]) and holds(tuple(results[2][0].tokens), [(4,)])


# ---------------------------------------------------------------- pieces


def test_term_progress_reads_the_longest_prefix_and_completion() -> None:
    ids = torch.tensor([[[4, 4, 5], [6, 0, 0]]])  # terms (4 4 5) and (6)
    lengths = torch.tensor([[3, 1]])
    tails = torch.tensor([[[1, 4, 4], [4, 4, 5], [4, 5, 6], [5, 4, 1]]])
    complete, prefix = term_progress(tails, ids, lengths)
    assert complete[0].tolist() == [[False, False], [True, False], [False, True], [False, False]]
    assert prefix[0].tolist() == [[2, 0], [0, 0], [0, 0], [0, 0]]


def test_allocate_deals_round_robin_over_banks_highest_first() -> None:
    values = torch.tensor([[-1.0, -2.0, -3.0, -4.0, -5.0, float("-inf")]])
    banks = torch.tensor([[0, 0, 1, 1, 2, 2]])
    assert allocate(values, banks, k=3, top=4).tolist() == [[4, 2, 0]]
    assert allocate(values, banks, k=6, top=4).tolist() == [[4, 2, 0, 3, 1, 5]]
