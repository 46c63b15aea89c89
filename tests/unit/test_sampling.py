"""Sampling: logit filtering, the settings it shares with beam search, and nbest samples per sentence.

Token log-probs are checked against the teacher-forced `model.forward` (see test_beam.py).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from nmt.config import DecodeConfig
from nmt.decode.beam import Hypothesis
from nmt.decode.greedy import greedy_search
from nmt.decode.sampling import filter_logits, sample
from nmt.decode.search import search
from tests.unit.test_beam import REAL_TOKENS, SRC_ROWS, forward_token_scores, padded_batch, settings, tiny_model

CPU = torch.device("cpu")


@pytest.fixture(params=["toy", "transformer", "lstm_luong"])
def model(request: pytest.FixtureRequest) -> torch.nn.Module:
    return tiny_model(request.param)


def repeated_bigrams(tokens: list[int]) -> int:
    bigrams = list(zip(tokens, tokens[1:], strict=False))
    return len(bigrams) - len(set(bigrams))


def test_top_p_keeps_smallest_set_reaching_mass() -> None:
    logp = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = filter_logits(logp, temperature=1.0, top_k=0, top_p=0.7).isfinite()
    assert kept.tolist() == [[True, True, False, False]]
    kept = filter_logits(logp, temperature=1.0, top_k=3, top_p=1.0).isfinite()
    assert kept.tolist() == [[True, True, True, False]]


def test_sampling_top_k_one_equals_greedy(model: torch.nn.Module) -> None:
    src_ids, src_pad = padded_batch(SRC_ROWS)
    greedy = greedy_search(model, src_ids, src_pad, cfg=settings(max_len_a=1.0, max_len_b=3))
    cfg = settings(max_len_a=1.0, max_len_b=3, sampling=True, top_k=1, temperature=0.7)
    sampled = sample(model, src_ids, src_pad, cfg=cfg, generator=torch.Generator().manual_seed(1))
    assert sampled == greedy


def test_sampling_respects_length_limits(model: torch.nn.Module) -> None:
    src_ids, src_pad = padded_batch(SRC_ROWS)
    generator = torch.Generator().manual_seed(3)
    cfg = settings(max_len_a=0.0, max_len_b=4, min_len=2, sampling=True, top_p=0.9)
    for _ in range(5):
        hyps = sample(model, src_ids, src_pad, cfg=cfg, generator=generator)
        for hyp in hyps:
            assert isinstance(hyp, Hypothesis)
            assert 2 <= len(hyp.tokens) <= 4
            assert set(hyp.tokens) <= set(REAL_TOKENS)


def test_sampling_honours_no_repeat_ngram(model: torch.nn.Module) -> None:
    """Three real tokens make nine bigrams: hot samples of 8 to 12 tokens repeat one unless blocked."""
    hot = DecodeConfig(sampling=True, beam=4, nbest=4, temperature=3.0, max_len_a=0.0, max_len_b=12, min_len=8)
    torch.manual_seed(0)
    free = search(model, SRC_ROWS, hot, device=CPU)
    assert any(repeated_bigrams(h.tokens) for hyps in free for h in hyps)  # the check below can fail
    torch.manual_seed(0)
    blocked = search(model, SRC_ROWS, dataclasses.replace(hot, no_repeat_ngram=2), device=CPU)
    for src, hyps in zip(SRC_ROWS, blocked, strict=True):
        assert len(hyps) == 4
        for hyp in hyps:
            assert repeated_bigrams(hyp.tokens) == 0, hyp.tokens
            assert hyp.token_scores == pytest.approx(forward_token_scores(model, src, hyp.tokens), abs=1e-5)


@pytest.mark.parametrize("beam", [1, 3, 5])
def test_sampling_gives_nbest_samples_whatever_the_beam(model: torch.nn.Module, beam: int) -> None:
    cfg = DecodeConfig(sampling=True, beam=beam, nbest=3, max_len_a=1.0, max_len_b=3)
    torch.manual_seed(0)
    results = search(model, [*SRC_ROWS, []], cfg, device=CPU)
    assert [len(hyps) for hyps in results] == [3, 3, 3, 0]  # an empty source gets no model call
    for src, hyps in zip(SRC_ROWS, results[:-1], strict=True):
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        for hyp in hyps:
            assert hyp.token_scores == pytest.approx(forward_token_scores(model, src, hyp.tokens), abs=1e-5)
