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
from nmt.errors import ConfigError
from nmt.tokens import BOS_ID, EOS_ID, PAD_ID


def padded_lengths(dataset: TokenDataset) -> np.ndarray:
    """(N,) the padded length each example needs: max(src + eos, bos + tgt)."""
    return np.maximum(dataset.src_lens + 1, dataset.tgt_lens + 1)


def check_budget(dataset: TokenDataset, *, batch_tokens: int) -> None:
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
    rng = np.random.default_rng([seed, epoch])
    if shuffle:
        order = rng.permutation(len(lengths))
        order = order[np.argsort(lengths[order], kind="stable")]  # sorted by length, random among equals
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
        end = max(end, start + 1)  # an oversized example gets a batch of its own (check_budget rejects it first)
        batches.append(order[start:end])
        start = end
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


@dataclass
class Batch:
    """Padded tensors of one batch (ids on the host until `to`)."""

    src_ids: torch.Tensor  # (B, S) source ids + eos, pad-filled
    src_pad: torch.Tensor  # (B, S) True at padding
    tgt_in: torch.Tensor  # (B, T) bos + target ids
    tgt_out: torch.Tensor  # (B, T) target ids + eos, pad-filled
    n_tgt_tokens: int  # non-pad tokens in tgt_out (known on the host: no sync)

    def to(self, device: torch.device) -> Batch:
        nb = device.type == "cuda"
        return Batch(
            self.src_ids.to(device, non_blocking=nb),
            self.src_pad.to(device, non_blocking=nb),
            self.tgt_in.to(device, non_blocking=nb),
            self.tgt_out.to(device, non_blocking=nb),
            self.n_tgt_tokens,
        )


def collate(dataset: TokenDataset, indices: np.ndarray, *, pad_multiple: int = 1) -> Batch:
    """Build the padded batch of `indices`; both lengths rounded up to a multiple of `pad_multiple`
    (compiled training: fewer distinct shapes; the extra columns are padding, masked and ignored)."""
    pairs = [dataset[int(i)] for i in indices]
    n = len(pairs)
    src_len = _round_up(max(len(s) for s, _ in pairs) + 1, pad_multiple)
    tgt_len = _round_up(max(len(t) for _, t in pairs) + 1, pad_multiple)
    src = np.full((n, src_len), PAD_ID, dtype=np.int64)
    tgt_in = np.full((n, tgt_len), PAD_ID, dtype=np.int64)
    tgt_out = np.full((n, tgt_len), PAD_ID, dtype=np.int64)
    for row, (s, t) in enumerate(pairs):
        src[row, : len(s)] = s
        src[row, len(s)] = EOS_ID
        tgt_in[row, 0] = BOS_ID
        tgt_in[row, 1 : len(t) + 1] = t
        tgt_out[row, : len(t)] = t
        tgt_out[row, len(t)] = EOS_ID
    src_ids = torch.from_numpy(src)
    return Batch(
        src_ids,
        src_ids == PAD_ID,
        torch.from_numpy(tgt_in),
        torch.from_numpy(tgt_out),
        int(sum(len(t) + 1 for _, t in pairs)),
    )


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple
