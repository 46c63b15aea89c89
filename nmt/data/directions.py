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
    """One direction's share of a split, from one of its sources (all of it, or its first `size` examples).

    `weight` and `tag_id` are its train source's (`data.splits.train`): examples drawn per epoch =
    weight x size within its direction, and the tag's control token before each source.
    """

    name: str  # the direction, e.g. "de-en"; "" for a bilingual split
    data: TokenDataset
    marks: Marks
    tgt_lang: str
    size: int
    weight: float = 1.0
    tag_id: int | None = None

    @classmethod
    def of(
        cls,
        name: str,
        data: TokenDataset,
        marks: Marks,
        tgt_lang: str,
        *,
        limit: int | None = None,
        weight: float = 1.0,
        tag_id: int | None = None,
    ) -> Part:
        size = len(data) if limit is None else min(limit, len(data))
        return cls(name, data, marks, tgt_lang, size, weight, tag_id)

    @property
    def src_prefix(self) -> list[int]:
        """What goes before each source's tokens: the source's tag, then the language tag (if any)."""
        return [t for t in (self.tag_id, self.marks.src_tag) if t is not None]


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
            [p.data.src_lens[: p.size].astype(np.int64) + len(p.src_prefix) for p in self.parts]
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
        if part.src_prefix:
            src = np.concatenate([part.src_prefix, src]).astype(np.int64)
        return src, tgt

    def start_ids(self, indices: np.ndarray) -> np.ndarray:
        return self._starts[indices]

    def at_epoch(self, epoch: int) -> Mixture:
        """The examples as epoch `epoch` reads them: these (a noised dataset, `nmt.data.noising.Denoising`,
        draws each epoch's noise)."""
        return self

    def check_ids(self, side: str, ids: np.ndarray, indices: np.ndarray) -> None:
        self.parts[0].data.check_ids(side, ids, indices)  # one vocabulary for every part

    def epoch_examples(self, *, seed: int, epoch: int, temperature: float) -> np.ndarray:
        """The examples of one epoch. Each direction d has a weighted size n_d = sum of w_k * n_k over its
        sources k (weight w_k, n_k examples); with several directions, direction d contributes
        round(N * p_d) examples, p_d ~ n_d ** (1 / temperature), N = the sum of the n_d (one direction:
        n_d); within it, source k contributes its share w_k * n_k / n_d of them. A part's count is whole
        passes over it, then a seeded draw without replacement for the rest (small parts repeated,
        large ones thinned). One part of weight 1: every example once, in order. A function of
        (seed, epoch): a resume draws the same."""
        if len(self.parts) == 1 and self.parts[0].weight == 1.0:
            return np.arange(len(self), dtype=np.int64)
        sizes = np.array([p.size for p in self.parts], dtype=np.float64)
        weighted = sizes * np.array([p.weight for p in self.parts])
        names = list(dict.fromkeys(p.name for p in self.parts))
        group = np.array([names.index(p.name) for p in self.parts])
        totals = np.bincount(group, weights=weighted, minlength=len(names))
        shares = totals ** (1.0 / temperature)
        direction_counts = totals.sum() * shares / shares.sum()
        counts = np.rint(direction_counts[group] * weighted / totals[group]).astype(np.int64)
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
