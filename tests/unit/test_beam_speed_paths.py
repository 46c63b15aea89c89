"""The shortcuts that keep beam search cheap on CPU, each against a plain reference.

Sparse n-gram bans vs a Python scan and a dense mask; the wide beam with blocking vs
exhaustive search over the outputs without a repeated n-gram; the Transformer's encoder
output not copied when the batch shrinks.
"""

from __future__ import annotations

import itertools
import math
import random

import pytest
import torch

from nmt.decode.beam import beam_search, forbid_tokens_, repeated_ngram_ids
from nmt.model.transformer import TransformerMemory
from nmt.tokens import BOS_ID, EOS_ID, PAD_ID
from tests.unit.test_beam import MODEL_CONFIGS, REAL_TOKENS, SRC_ROWS, padded_batch, reference_lp, settings, tiny_model

torch.set_num_threads(1)


def banned_by_scan(row: list[int], n: int) -> set[int]:
    """Tokens that follow an earlier occurrence of the row's last n-1 tokens."""
    if n <= 0 or len(row) < n:
        return set()
    suffix = row[len(row) - n + 1 :]
    return {row[i + n - 1] for i in range(len(row) - n + 1) if row[i : i + n - 1] == suffix}


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_repeated_ngram_ids_match_a_python_scan(n: int) -> None:
    rng = random.Random(n)
    for t in range(9):
        rows = [[rng.choice([4, 5, 6]) for _ in range(t)] for _ in range(20)]
        banned = repeated_ngram_ids(torch.tensor(rows, dtype=torch.long).view(20, t), n=n)
        assert banned.shape == (20, max(t - n + 1, 0))
        for row, ids in zip(rows, banned.tolist(), strict=True):
            assert set(ids) - {PAD_ID} == banned_by_scan(row, n)


def forbid_dense(logp: torch.Tensor, *, step: int, min_len: int, max_out: torch.Tensor, banned: set[int]) -> list:
    """One row of `forbid_tokens_`'s rules, written out with a dense mask over the vocabulary."""
    allowed = [t not in (PAD_ID, BOS_ID) and t not in banned for t in range(logp.numel())]
    allowed[EOS_ID] = allowed[EOS_ID] and step >= min_len
    if int(max_out) == step:
        allowed = [False] * logp.numel()
    if int(max_out) == step or not any(allowed):
        allowed[EOS_ID] = True
    return [x if ok else -math.inf for x, ok in zip(logp.tolist(), allowed, strict=True)]


@pytest.mark.parametrize("vocab", [6, 9, 40])
def test_sparse_bans_match_a_dense_mask(vocab: int) -> None:
    """Bans by id, padded with PAD_ID and repeated, including rows that ban every ordinary token."""
    g = torch.Generator().manual_seed(vocab)
    ordinary = torch.tensor([t for t in range(vocab) if t not in (PAD_ID, BOS_ID, EOS_ID)])
    for width in range(vocab + 2):
        rows = 12
        logp = torch.randn(rows, vocab, generator=g).log_softmax(-1)
        banned = torch.randint(0, vocab, (rows, width), generator=g)
        banned[: rows // 3] = ordinary[torch.arange(width) % ordinary.numel()]  # width >= V - 3: rows are stuck
        max_out = torch.randint(2, 5, (rows,), generator=g)
        for step, min_len in [(2, 0), (2, 3), (4, 1)]:
            got = forbid_tokens_(logp.clone(), step=step, min_len=min_len, max_out=max_out, banned=banned)
            for r in range(rows):
                expected = forbid_dense(
                    logp[r], step=step, min_len=min_len, max_out=max_out[r], banned=set(banned[r].tolist())
                )
                assert got[r].tolist() == expected, (width, step, r)


@torch.inference_mode()
def best_without_repeats(model: torch.nn.Module, src: list[int], *, max_out: int, n: int, mode: str, alpha: float):
    """Best (tokens, normalised score) over every output without a repeated n-gram."""
    best: tuple[list[int], float] | None = None
    for length in range(1, max_out + 1):
        outputs = [list(y) for y in itertools.product(REAL_TOKENS, repeat=length)]
        outputs = [y for y in outputs if all(y[i] not in banned_by_scan(y[:i], n) for i in range(length))]
        tgt_in = torch.tensor([[BOS_ID] + y for y in outputs])
        tgt_out = torch.tensor([y + [EOS_ID] for y in outputs])
        src_ids = torch.tensor([src] * len(outputs))
        logp = torch.log_softmax(model(src_ids, src_ids == PAD_ID, tgt_in).float(), dim=-1)
        for y, row in zip(outputs, logp.gather(2, tgt_out.unsqueeze(-1)).squeeze(-1).tolist(), strict=True):
            score = math.fsum(row) / reference_lp(length + 1, mode, alpha)
            if best is None or score > best[1]:
                best = (y, score)
    assert best is not None
    return best


@pytest.mark.parametrize("name", ["toy", *MODEL_CONFIGS])
@pytest.mark.parametrize(("n", "mode", "alpha"), [(1, "average", 1.0), (2, "none", 1.0), (2, "gnmt", 0.6)])
def test_wide_beam_with_ngram_blocking_matches_exhaustive_search(name: str, n: int, mode: str, alpha: float) -> None:
    """Up to 3 tokens no row runs out of allowed tokens, so blocking only prunes the outputs."""
    model = tiny_model(name)
    src_ids, src_pad = padded_batch(SRC_ROWS)
    cfg = settings(beam=40, max_len_a=0.0, max_len_b=3, length_penalty=mode, alpha=alpha, no_repeat_ngram=n)
    for src, hyps in zip(SRC_ROWS, beam_search(model, src_ids, src_pad, cfg=cfg), strict=True):
        tokens, score = best_without_repeats(model, src, max_out=3, n=n, mode=mode, alpha=alpha)
        assert hyps[0].tokens == tokens
        assert hyps[0].score == pytest.approx(score, abs=1e-5)


def test_transformer_encoder_output_is_not_copied_when_the_batch_shrinks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its decode_step reads the state only, and init_state keeps one cross-attention K/V row per
    sentence for all its beams: the encoder output is never selected, not even repeated per beam."""
    selections = []
    original = TransformerMemory.index_select

    def counting(self: TransformerMemory, idx: torch.Tensor) -> TransformerMemory:
        selections.append(idx.numel())
        return original(self, idx)

    monkeypatch.setattr(TransformerMemory, "index_select", counting)
    rows = SRC_ROWS + [[4, 4, 5, 1, 5, 4, 1]]  # different length limits: sentences leave at different steps
    src_ids, src_pad = padded_batch(rows)
    results = beam_search(tiny_model("transformer"), src_ids, src_pad, cfg=settings(beam=3, max_len_a=1.0, max_len_b=1))
    assert [len(h) for h in results] == [1] * len(rows)
    assert selections == []
