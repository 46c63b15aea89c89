from __future__ import annotations

import numpy as np
import pytest
import torch

from nmt.data.batching import make_batches
from nmt.train.loss import label_smoothed_nll


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("max_sentences", [None, 7])
def test_batches_cover_every_example_once_within_budget(seed: int, max_sentences: int | None) -> None:
    lengths = np.random.default_rng(seed).integers(1, 60, size=1000)
    for epoch in (1, 2):
        batches = make_batches(lengths, batch_tokens=256, max_sentences=max_sentences, seed=seed, epoch=epoch)
        flat = np.concatenate(batches)
        assert sorted(flat.tolist()) == list(range(1000))
        for b in batches:
            assert len(b) * lengths[b].max() <= 256
            if max_sentences:
                assert len(b) <= max_sentences
    # padding stays small thanks to length bucketing
    batches = make_batches(lengths, batch_tokens=256, max_sentences=None, seed=seed, epoch=1)
    padded = sum(len(b) * lengths[b].max() for b in batches)
    assert lengths.sum() / padded > 0.9


def test_batch_order_is_seeded_per_epoch() -> None:
    lengths = np.random.default_rng(0).integers(1, 60, size=500)
    a = make_batches(lengths, batch_tokens=256, max_sentences=None, seed=3, epoch=1)
    b = make_batches(lengths, batch_tokens=256, max_sentences=None, seed=3, epoch=1)
    c = make_batches(lengths, batch_tokens=256, max_sentences=None, seed=3, epoch=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(len(x) == len(y) and np.array_equal(x, y) for x, y in zip(a, c))


def test_label_smoothing_matches_hand_computation() -> None:
    logits = torch.tensor([[[2.0, 0.0, -1.0, 0.5], [0.1, 0.2, 0.3, 0.4]]])
    target = torch.tensor([[2, 0]])  # second position is padding (pad_id=0)
    loss, nll = label_smoothed_nll(logits, target, smoothing=0.1, pad_id=0)
    row = [2.0, 0.0, -1.0, 0.5]
    import math

    log_z = math.log(sum(math.exp(x) for x in row))
    logp = [x - log_z for x in row]
    expected = 0.9 * -logp[2] + 0.1 * -sum(logp) / 4
    assert nll.item() == pytest.approx(-logp[2], abs=1e-6)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def greedy_batches_reference(
    lengths: np.ndarray, *, batch_tokens: int, max_sentences: int | None, seed: int, epoch: int, shuffle: bool = True
) -> list[np.ndarray]:
    """make_batches as it was before vectorising: the greedy cut, one Python step per example."""
    rng = np.random.default_rng([seed, epoch])
    if shuffle:
        order = rng.permutation(len(lengths))
        order = order[np.argsort(lengths[order], kind="stable")]
    else:
        order = np.argsort(lengths, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    cap = max_sentences or len(lengths)
    while start < len(order):
        end, longest = start, 0
        while end < len(order):
            longest_next = max(longest, int(lengths[order[end]]))
            if (end - start + 1) * longest_next > batch_tokens or end - start + 1 > cap:
                break
            longest, end = longest_next, end + 1
        end = max(end, start + 1)
        batches.append(order[start:end])
        start = end
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


@pytest.mark.parametrize("seed", [0, 1, 5])
@pytest.mark.parametrize("max_sentences", [None, 1, 7, 100])
@pytest.mark.parametrize("batch_tokens", [1, 30, 256, 4096])
@pytest.mark.parametrize("shuffle", [True, False])
def test_vectorised_batches_equal_the_greedy_loop(
    seed: int, max_sentences: int | None, batch_tokens: int, shuffle: bool
) -> None:
    rng = np.random.default_rng(seed)
    # skewed lengths with many ties, a few over the budget (batches of their own), and one empty corpus
    lengths = np.concatenate([rng.integers(1, 40, size=2000), rng.integers(200, 300, size=5)])
    for n in (0, 1, len(lengths)):
        got = make_batches(
            lengths[:n], batch_tokens=batch_tokens, max_sentences=max_sentences, seed=seed, epoch=3, shuffle=shuffle
        )
        want = greedy_batches_reference(
            lengths[:n], batch_tokens=batch_tokens, max_sentences=max_sentences, seed=seed, epoch=3, shuffle=shuffle
        )
        assert len(got) == len(want)
        assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
