"""Directions of a multilingual model: where the language token goes, and training examples drawn
from several prepared parts (one per direction) with temperature sampling.

A multilingual model marks the output language with its language token (`nmt.tokens.lang_piece`,
a control symbol of the joint vocabulary). `data.lang_token` says where:
- target (default): the token replaces BOS as the decoder's first input, `[>>fr<<] + y`; the
  target side is `y + [EOS]` as always, so no loss is spent on the token. CTranslate2 and Argos
  express this as `target_prefix` with no start token of the model's own.
- source: the token leads the source, `[>>fr<<] + x + [EOS]` (OPUS-MT's multi-target models),
  and the decoder starts with BOS.

A bilingual model is the one-part case: BOS, no tag, every example once per epoch, so its
batches are exactly those it had before directions existed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nmt.config import ExperimentConfig
from nmt.data.binarize import TokenDataset
from nmt.data.vocab import Vocab
from nmt.errors import CheckpointError
from nmt.tokens import BOS_ID


@dataclass(frozen=True)
class Marks:
    """How one output language is asked for: the decoder's first input and the source's first id."""

    start_id: int = BOS_ID
    src_tag: int | None = None


def marks_for(cfg: ExperimentConfig, vocab: Vocab, tgt_lang: str | None) -> Marks:
    """The marks for translating into `tgt_lang` with a model of `cfg` and `vocab`; a bilingual
    model has none to give (BOS, no tag) whatever `tgt_lang` is."""
    if not cfg.data.multilingual:
        return Marks()
    assert tgt_lang is not None
    token = vocab.lang_id(tgt_lang)
    if token is None:
        raise CheckpointError(f"the vocabulary has no language token for {tgt_lang!r}")
    return Marks(src_tag=token) if cfg.data.lang_token == "source" else Marks(start_id=token)


@dataclass(frozen=True)
class Part:
    """One direction's share of a split (all of it, or its first `size` examples)."""

    name: str  # the direction, e.g. "de-en"; "" for a bilingual split
    data: TokenDataset
    marks: Marks
    tgt_lang: str
    size: int

    @classmethod
    def of(cls, name: str, data: TokenDataset, marks: Marks, tgt_lang: str, *, limit: int | None = None) -> Part:
        return cls(name, data, marks, tgt_lang, len(data) if limit is None else min(limit, len(data)))


class Mixture:
    """The examples of several parts in one index space (part 0's first, then part 1's, ...).

    `mix[i]` is (source ids with the source tag if any, target ids), as `TokenDataset[i]` is;
    `start_ids(indices)` gives each example's first decoder input.
    """

    def __init__(self, parts: Sequence[Part], split: str) -> None:
        self.parts, self.split = list(parts), split
        sizes = [p.size for p in self.parts]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.src_lens = np.concatenate(
            [p.data.src_lens[: p.size].astype(np.int64) + (p.marks.src_tag is not None) for p in self.parts]
        )
        self.tgt_lens = np.concatenate([p.data.tgt_lens[: p.size].astype(np.int64) for p in self.parts])
        self._starts = np.repeat([p.marks.start_id for p in self.parts], sizes)
        self.vocab_sizes = self.parts[0].data.vocab_sizes

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _locate(self, i: int) -> tuple[Part, int]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = int(np.searchsorted(self.offsets, i, side="right")) - 1
        return self.parts[k], i - int(self.offsets[k])

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        part, j = self._locate(i)
        src, tgt = part.data[j]
        if part.marks.src_tag is not None:
            src = np.concatenate([[part.marks.src_tag], src]).astype(np.int64)
        return src, tgt

    def start_ids(self, indices: np.ndarray) -> np.ndarray:
        return self._starts[indices]

    def check_ids(self, side: str, ids: np.ndarray, indices: np.ndarray) -> None:
        self.parts[0].data.check_ids(side, ids, indices)  # one vocabulary for every part

    def epoch_examples(self, *, seed: int, epoch: int, temperature: float) -> np.ndarray:
        """The examples of one epoch: every example once with one part; with several, part k
        contributes round(N * p_k) examples, p_k ~ n_k ** (1 / temperature), N the total: whole
        passes over it, then a seeded draw without replacement for the rest (small parts are
        repeated, large ones thinned). A function of (seed, epoch): a resume draws the same."""
        if len(self.parts) == 1:
            return np.arange(len(self), dtype=np.int64)
        sizes = np.array([p.size for p in self.parts], dtype=np.float64)
        weights = sizes ** (1.0 / temperature)
        counts = np.rint(sizes.sum() * weights / weights.sum()).astype(np.int64)
        rng = np.random.default_rng([seed, epoch, 0x6D6978])  # not the batch order's stream
        chosen = []
        for k, (n, count) in enumerate(zip(sizes.astype(np.int64), counts, strict=True)):
            passes, rest = divmod(int(count), int(n))
            idx = np.concatenate([np.tile(np.arange(n), passes), np.sort(rng.choice(n, size=rest, replace=False))])
            chosen.append(idx + self.offsets[k])
        return np.concatenate(chosen).astype(np.int64)


@dataclass(frozen=True)
class ValidSet:
    """One direction's validation examples (a one-part Mixture) and their raw references."""

    name: str  # the direction; "" for a bilingual model
    data: Mixture
    refs: list[str]

    @property
    def marks(self) -> Marks:
        return self.data.parts[0].marks

    @property
    def tgt_lang(self) -> str:
        return self.data.parts[0].tgt_lang
