"""Scores by source sentence length: sacreBLEU BLEU and chrF per bucket of source words, as a table or plot.

A sentence's length is the number of whitespace-separated words of its source line
(`str.split()`), so buckets mean the same for every tokenizer and model. Boundaries
`10,20,30` give the buckets 0-9, 10-19, 20-29 and 30+; every sentence lands in exactly
one bucket, and a bucket's scores are sacreBLEU's corpus scores on exactly its lines.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nmt.console import table
from nmt.errors import NmtError
from nmt.metrics import corpus_scores

DEFAULT_BOUNDARIES = (10, 20, 30)  # -> 0-9, 10-19, 20-29, 30+ source words


@dataclass(frozen=True)
class BucketScore:
    """BLEU and chrF of the sentences whose source has min_words..max_words words."""

    min_words: int
    max_words: int | None  # None: no upper bound (the last bucket)
    sentences: int
    bleu: float | None  # None for an empty bucket
    chrf: float | None

    @property
    def label(self) -> str:
        """ "0-9", "30+", or "7" for a one-length bucket."""
        if self.max_words is None:
            return f"{self.min_words}+"
        return str(self.min_words) if self.max_words == self.min_words else f"{self.min_words}-{self.max_words}"

    def to_json(self) -> dict[str, Any]:
        return {
            "range": self.label,
            "min_words": self.min_words,
            "max_words": self.max_words,
            "sentences": self.sentences,
            "bleu": self.bleu,
            "chrf": self.chrf,
        }


def parse_boundaries(text: str) -> tuple[int, ...]:
    """`--buckets "10,20,30"` -> (10, 20, 30): positive, strictly increasing word counts."""
    hint = "e.g. --buckets 10,20,30 gives the buckets 0-9, 10-19, 20-29 and 30+ source words"
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise NmtError(f"--buckets {text!r}: expected comma-separated whole numbers of words", hint=hint) from None
    if any(v <= 0 for v in values) or any(b <= a for a, b in zip(values, values[1:])):
        raise NmtError(f"--buckets {text!r}: boundaries must be positive and strictly increasing", hint=hint)
    return values


def bucket_of(words: int, boundaries: Sequence[int]) -> int:
    """Bucket index of a sentence with `words` source words: i where boundaries[i-1] <= words < boundaries[i]."""
    return bisect.bisect_right(boundaries, words)


def scores_by_length(
    src: Sequence[str],
    hyps: Sequence[str],
    refs: Sequence[Sequence[str]],
    boundaries: Sequence[int],
    *,
    tgt_lang: str | None = None,
) -> list[BucketScore]:
    """Corpus BLEU and chrF of each source-length bucket, shortest first.

    Args:
        src: source lines (N); their whitespace word counts pick the buckets.
        hyps: hypotheses (N), read as for corpus scoring.
        refs: reference streams, each of length N (`refs[j][i]`).
        boundaries: positive, increasing bucket starts (see `parse_boundaries`).
        tgt_lang: the hypotheses' language (BLEU's tokenizer, see `nmt.metrics`).
    """
    assert len(src) == len(hyps), "source and hypotheses must be line-aligned"
    members: list[list[int]] = [[] for _ in range(len(boundaries) + 1)]
    for i, line in enumerate(src):
        members[bucket_of(len(line.split()), boundaries)].append(i)
    starts, ends = (0, *boundaries), (*(b - 1 for b in boundaries), None)
    out = []
    for lines, lo, hi in zip(members, starts, ends, strict=True):
        if not lines:
            out.append(BucketScore(lo, hi, 0, None, None))
            continue
        scores = corpus_scores(
            [hyps[i] for i in lines], [[r[i] for i in lines] for r in refs], keys=("bleu", "chrf"), tgt_lang=tgt_lang
        )
        out.append(BucketScore(lo, hi, len(lines), scores["bleu"].score, scores["chrf"].score))
    return out


def table_by_length(systems: Sequence[tuple[str, list[BucketScore]]], *, source: Path | None) -> None:
    """One table on stderr: a row per bucket, BLEU and chrF columns per system ("-" for an empty bucket)."""
    names = [f"{label} " if len(systems) > 1 else "" for label, _ in systems]
    columns = ["source words", "sentences", *[f"{n}{m}" for n in names for m in ("BLEU", "chrF")]]
    rows = []
    for buckets in zip(*[b for _, b in systems], strict=True):
        cells = ["-" if v is None else v for b in buckets for v in (b.bleu, b.chrf)]
        rows.append((buckets[0].label, buckets[0].sentences, *cells))
    table(f"by source length ({source})", columns, rows)


def plot_by_length(path: Path, systems: Sequence[tuple[str, list[BucketScore]]], *, title: str) -> None:
    """BLEU against bucket, one line per system, as a PNG (see `nmt.plots.bleu_by_length`)."""
    from nmt.plots import bleu_by_length

    first = systems[0][1]
    series = [(label, [b.bleu for b in buckets]) for label, buckets in systems]
    bleu_by_length(path, [b.label for b in first], series, counts=[b.sentences for b in first], title=title)
