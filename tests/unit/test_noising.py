"""BART text infilling (nmt.data.noising): the mask share and span lengths it promises, measured on its
outputs alone (masks counted in the output, masked tokens = input tokens not in it)."""

from __future__ import annotations

import numpy as np

from nmt.data.noising import span_lengths, text_infilling

MASK, LANG = 99, 98


def corpus(seed: int, tokens: int = 10_000) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    out, total = [], 0
    while total < tokens:
        n = int(rng.integers(8, 40))  # sentence-length inputs, as Multi30k's
        out.append([LANG, *rng.integers(4, 90, n).tolist()])
        total += n
    return out


def test_mask_share_and_mean_span_length_are_the_targets_over_10k_tokens() -> None:
    rng = np.random.default_rng(0)
    masked = spans = tokens = 0
    for ids in corpus(1):
        out = text_infilling(ids, mask_id=MASK, rng=rng, ratio=0.35, lam=3.0, keep_prefix=1)
        k = out.count(MASK)
        n = len(ids) - 1
        kept = len(out) - 1 - k
        masked, spans, tokens = masked + n - kept, spans + k, tokens + n
    assert abs(masked / tokens - 0.35) <= 0.02, masked / tokens
    assert abs(masked / spans - 3.0) <= 0.3, masked / spans


def test_language_token_kept_order_kept_and_one_mask_per_span() -> None:
    rng = np.random.default_rng(3)
    zero_length = 0
    for ids in corpus(2, 3000):
        out = text_infilling(ids, mask_id=MASK, rng=rng, keep_prefix=1)
        assert out[0] == LANG and LANG not in out[1:]
        rest = [t for t in out[1:] if t != MASK]
        it = iter(ids[1:])
        assert all(t in it for t in rest)  # the kept tokens, in their order: a subsequence of the input
        assert all(not (a == MASK and b == MASK) for a, b in zip(out, out[1:], strict=False))  # no two masks touch
        masks, removed = out.count(MASK), len(ids) - 1 - len(rest)
        zero_length += removed < masks  # fewer tokens removed than masks: a zero-length span inserted one
    assert zero_length > 0


def test_deterministic_under_a_seed_and_short_inputs_fit() -> None:
    ids = list(range(4, 40))
    a = text_infilling(ids, mask_id=MASK, rng=np.random.default_rng(7))
    b = text_infilling(ids, mask_id=MASK, rng=np.random.default_rng(7))
    c = text_infilling(ids, mask_id=MASK, rng=np.random.default_rng(8))
    assert a == b and a != c
    rng = np.random.default_rng(0)
    for n in range(0, 6):
        for _ in range(200):
            lengths = span_lengths(n, ratio=0.35, lam=3.0, rng=rng)
            assert sum(lengths) <= n and len(lengths) <= n - sum(lengths) + 1
            out = text_infilling(list(range(4, 4 + n)), mask_id=MASK, rng=rng)
            assert len(out) >= 0 and all(t == MASK or 4 <= t < 4 + n for t in out)
