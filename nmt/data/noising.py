"""BART's text infilling (Lewis et al. 2020, section 2.2): the noise `nmt pretrain` trains the model to undo.

Spans of the token sequence, their lengths drawn from Poisson(lambda) (lambda = 3), are each replaced by
one mask token until about `ratio` (0.35) of the tokens are masked; a span of length 0 inserts a mask
where nothing was removed. The model reads the noised sequence and is trained to write the original.

How spans are drawn, so that both the masked share and the span lengths are what they say, also for
sentence-length inputs (BART's own code trims the last span to hit the count exactly, and lets spans
overlap, which shortens spans and lowers the share on short inputs):
- the number of spans K has mean ratio * n / lambda (its floor, plus one with the fractional part's
  probability), so K * lambda tokens are masked on average: `ratio` of the n;
- the K lengths are independent Poisson(lambda) draws, redrawn (up to 20 times) when they do not fit:
  together at most n tokens, and at most one span per gap between kept tokens (n - masked + 1 gaps);
  past that, the longest span is shortened and extra spans dropped until they fit (only very short
  inputs get there);
- the spans go into K distinct gaps chosen uniformly, so no two masks touch and a zero-length span
  inserts exactly one mask.
The first `keep_prefix` tokens (a language token) are never masked or moved. The same `rng` state
gives the same output.

`Denoising` serves monolingual text as training examples of this noise: source = the noised
sentence (after its language token, when several languages are pretrained: mBART's), target =
the sentence. Example i of epoch e is noised by a generator seeded with (seed, e, i), so every
epoch sees new noise and a resumed run the same noise as an uninterrupted one.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import numpy as np

from nmt.data.directions import Mixture, Part

REDRAWS = 20


def span_lengths(n: int, *, ratio: float, lam: float, rng: np.random.Generator) -> list[int]:
    """The lengths of the spans to mask in `n` tokens (see the module docstring); may be empty."""
    if n <= 0 or ratio <= 0:
        return []
    expected = ratio * n / lam
    count = math.floor(expected) + int(rng.random() < expected - math.floor(expected))
    if count == 0:
        return []
    lengths = rng.poisson(lam, count)
    for _ in range(REDRAWS):
        masked = int(lengths.sum())
        if masked <= n and count <= n - masked + 1:
            return lengths.tolist()
        lengths = rng.poisson(lam, count)
    out = sorted(lengths.tolist(), reverse=True)
    while sum(out) > n:
        out[0] -= 1
        out.sort(reverse=True)
    while len(out) > n - sum(out) + 1:
        out.pop()
    return out


def text_infilling(
    ids: Sequence[int],
    *,
    mask_id: int,
    rng: np.random.Generator,
    ratio: float = 0.35,
    lam: float = 3.0,
    keep_prefix: int = 0,
) -> list[int]:
    """`ids` with spans replaced by `mask_id` (module docstring); the first `keep_prefix` ids untouched."""
    head, body = list(ids[:keep_prefix]), list(ids[keep_prefix:])
    lengths = span_lengths(len(body), ratio=ratio, lam=lam, rng=rng)
    if not lengths:
        return head + body
    kept = len(body) - sum(lengths)
    slots = np.sort(rng.choice(kept + 1, size=len(lengths), replace=False)).tolist()
    order = rng.permutation(len(lengths)).tolist()  # which length goes into which chosen gap
    span_at = {slot: lengths[j] for slot, j in zip(slots, order, strict=True)}
    out, i = head, 0
    for gap in range(kept + 1):
        if gap in span_at:
            out.append(mask_id)
            i += span_at[gap]
        if gap < kept:
            out.append(body[i])
            i += 1
    return out


class Denoising(Mixture):
    """Monolingual parts (one per language; prepared with source ids only) as text-infilling examples.

    `src_lens` are the sentences' lengths before the noise (with the language token): the noise
    removes about 2/3 of a masked span's tokens net, and adds one only for a zero-length span, so
    a batch cut by these lengths is within a few tokens of its budget.
    """

    def __init__(
        self,
        parts: Sequence[Part],
        split: str,
        *,
        mask_id: int,
        seed: int,
        ratio: float = 0.35,
        lam: float = 3.0,
        epoch: int = 0,
    ) -> None:
        super().__init__(parts, split)
        self.tgt_lens = np.concatenate([p.data.src_lens[: p.size].astype(np.int64) for p in self.parts])
        self.mask_id, self.seed, self.ratio, self.lam, self.epoch = mask_id, seed, ratio, lam, epoch

    def at_epoch(self, epoch: int) -> Denoising:
        view = copy.copy(self)
        view.epoch = epoch
        return view

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        part, j = self._locate(i)
        sentence = part.data[j][0]
        rng = np.random.default_rng([self.seed, self.epoch, i])
        noised = text_infilling(sentence.tolist(), mask_id=self.mask_id, rng=rng, ratio=self.ratio, lam=self.lam)
        return np.array(part.src_prefix + noised, dtype=np.int64), sentence
