"""Token-budget batches with length bucketing, a seeded per-epoch order, and collation.

A batch's cost is its padded size: sentences x the longest side (source + eos, or
bos/eos + target), which must stay within `batch_tokens`. Sentences are sorted by length
(ties broken randomly per epoch) and cut greedily, so padding stays small; the batch
order is then shuffled with a generator seeded by (seed, epoch), which makes any
position in any epoch reproducible from two integers: that is how training resumes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nmt.data.binarize import TokenDataset
from nmt.data.directions import Mixture
from nmt.errors import ConfigError
from nmt.tokens import BOS_ID, EOS_ID, PAD_ID


def padded_lengths(dataset: TokenDataset | Mixture) -> np.ndarray:
    """(N,) the padded length each example needs: max(src + eos, bos + tgt)."""
    return np.maximum(dataset.src_lens + 1, dataset.tgt_lens + 1)


def check_budget(dataset: TokenDataset | Mixture, *, batch_tokens: int) -> None:
    """ConfigError when the longest example alone exceeds the token budget."""
    lengths = padded_lengths(dataset)
    if len(lengths) and lengths.max() > batch_tokens:
        i = int(lengths.argmax())
        raise ConfigError(
            f"train.batch_tokens ({batch_tokens}) is smaller than the longest {dataset.split} example "
            f"(#{i}: {int(lengths[i])} tokens, {int(lengths[i]) - batch_tokens} over)",
            hint=f"raise train.batch_tokens to at least {int(lengths.max())}, or lower data.max_len and re-run prepare",
        )


def make_batches(
    lengths: np.ndarray, *, batch_tokens: int, max_sentences: int | None, seed: int, epoch: int, shuffle: bool = True
) -> list[np.ndarray]:
    """Example indices per batch, for one epoch; every index appears exactly once.

    Args:
        lengths: (N,) padded length of each example (see `padded_lengths`).
    """
    if len(lengths) == 0:
        return []
    rng = np.random.default_rng([seed, epoch])
    if shuffle:
        order = rng.permutation(len(lengths))
        order = order[np.argsort(_sort_key(lengths[order]), kind="stable")]  # by length, random among equals
    else:
        order = np.argsort(_sort_key(lengths), kind="stable")
    batches = np.split(order, _cut_points(lengths[order], batch_tokens=batch_tokens, cap=max_sentences or None))
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def _sort_key(lengths: np.ndarray) -> np.ndarray:
    """The lengths as uint16 where they fit: numpy's stable sort is then a radix sort (same order, O(N))."""
    if len(lengths) and 0 <= lengths.min() and lengths.max() <= np.iinfo(np.uint16).max:
        return lengths.astype(np.uint16)
    return lengths


def _cut_points(sorted_lengths: np.ndarray, *, batch_tokens: int, cap: int | None) -> list[int]:
    """Where the greedy cut starts each batch but the first, over lengths sorted ascending.

    Greedy: a batch starting at `s` takes examples while (count x longest) <= batch_tokens and
    count <= cap. Sorted ascending, the longest of [s, j] is example j, which may close a batch
    starting at `s` iff j + 1 - s <= m_j = min(cap, batch_tokens // length_j), i.e. iff
    s >= g_j = j + 1 - m_j. g strictly increases (m never does), so a batch from `s` ends
    where g first exceeds s: one binary search per batch, no Python work per example.
    An example over the budget (m_j = 0) gets a batch of its own (check_budget rejects it first).
    """
    n = len(sorted_lengths)
    fit = batch_tokens // np.maximum(sorted_lengths.astype(np.int64), 1)
    if cap is not None:
        np.minimum(fit, cap, out=fit)
    g = np.arange(1, n + 1, dtype=np.int64) - fit
    cuts, start = [], 0
    while start < n:
        start = max(int(np.searchsorted(g, start, side="right")), start + 1)
        cuts.append(start)
    return cuts[:-1]


@dataclass
class Batch:
    """Padded tensors of one batch (ids on the host until `to`)."""

    src_ids: torch.Tensor  # (B, S) source ids + eos, pad-filled
    src_pad: torch.Tensor  # (B, S) True at padding
    tgt_in: torch.Tensor  # (B, T) bos + target ids
    tgt_out: torch.Tensor  # (B, T) target ids + eos, pad-filled
    n_tgt_tokens: int  # non-pad tokens in tgt_out (known on the host: no sync)
    # the non-pad positions of tgt_out.flatten() (N,), built on the host, and the gold ids there (N,): the
    # model projects only these rows onto the vocabulary (`keep`), the loss reads `tgt_gold`
    tgt_keep: torch.Tensor
    tgt_gold: torch.Tensor

    def to(self, device: torch.device) -> Batch:
        nb = device.type == "cuda"
        return Batch(
            self.src_ids.to(device, non_blocking=nb),
            self.src_pad.to(device, non_blocking=nb),
            self.tgt_in.to(device, non_blocking=nb),
            self.tgt_out.to(device, non_blocking=nb),
            self.n_tgt_tokens,
            self.tgt_keep.to(device, non_blocking=nb),
            self.tgt_gold.to(device, non_blocking=nb),
        )


def collate(dataset: TokenDataset | Mixture, indices: np.ndarray, *, pad_multiple: int = 1) -> Batch:
    """Build the padded batch of `indices`; both lengths rounded up to a multiple of `pad_multiple`
    (compiled training: fewer distinct shapes; the extra columns are padding, masked and ignored).
    A `Mixture`'s examples start the decoder with their own start id (a language token), others with BOS."""
    pairs = [dataset[int(i)] for i in indices]
    starts = dataset.start_ids(indices) if isinstance(dataset, Mixture) else np.full(len(pairs), BOS_ID)
    n = len(pairs)
    src_len = _round_up(max(len(s) for s, _ in pairs) + 1, pad_multiple)
    tgt_len = _round_up(max(len(t) for _, t in pairs) + 1, pad_multiple)
    src = np.full((n, src_len), PAD_ID, dtype=np.int64)
    tgt_in = np.full((n, tgt_len), PAD_ID, dtype=np.int64)
    tgt_out = np.full((n, tgt_len), PAD_ID, dtype=np.int64)
    for row, (s, t) in enumerate(pairs):
        src[row, : len(s)] = s
        src[row, len(s)] = EOS_ID
        tgt_in[row, 0] = starts[row]
        tgt_in[row, 1 : len(t) + 1] = t
        tgt_out[row, : len(t)] = t
        tgt_out[row, len(t)] = EOS_ID
    dataset.check_ids("src", src, indices)  # a shard changed since it was opened and checked
    dataset.check_ids("tgt", tgt_out, indices)
    src_ids = torch.from_numpy(src)
    keep = np.flatnonzero(tgt_out.reshape(-1) != PAD_ID)
    return Batch(
        src_ids,
        src_ids == PAD_ID,
        torch.from_numpy(tgt_in),
        torch.from_numpy(tgt_out),
        int(keep.size),
        torch.from_numpy(keep),
        torch.from_numpy(tgt_out.reshape(-1)[keep]),
    )


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple
