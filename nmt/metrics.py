"""Corpus scores with sacreBLEU: BLEU, chrF, chrF++ and TER, each with its signature.

The one module that imports sacrebleu; validation during training (`bleu`) and
`nmt evaluate` (`corpus_scores`) both score through it, so they always agree.

References use sacreBLEU's layout: `refs[j][i]` is reference j of sentence i, i.e. one
list per reference file, each as long as `hyps`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sacrebleu.metrics import BLEU, CHRF, TER
from sacrebleu.metrics.base import Metric

from nmt.errors import DataError


@dataclass(frozen=True)
class MetricScore:
    """One corpus-level score and the sacreBLEU signature that makes it reproducible."""

    name: str  # sacreBLEU's name, e.g. "BLEU", "chrF2++"
    score: float  # 0..100; higher is better except for TER
    signature: str  # e.g. "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"
    detail: str  # sacreBLEU's one-line verbose form (n-gram precisions, BP, ...)


METRICS = ("bleu", "chrf", "chrf++", "ter")


def _metrics(keys: Sequence[str]) -> dict[str, Metric]:
    make = {"bleu": BLEU, "chrf": CHRF, "chrf++": lambda: CHRF(word_order=2), "ter": TER}
    return {key: make[key]() for key in keys}


def _check(hyps: list[str], refs: list[list[str]]) -> None:
    if not refs:
        raise DataError("scoring needs at least one reference per sentence")
    for j, stream in enumerate(refs):
        if len(stream) != len(hyps):
            raise DataError(f"reference set {j + 1} has {len(stream):,} lines but there are {len(hyps):,} hypotheses")


def corpus_scores(hyps: list[str], refs: list[list[str]], *, keys: Sequence[str] = METRICS) -> dict[str, MetricScore]:
    """BLEU, chrF, chrF++ (word n-grams up to 2) and TER with sacreBLEU's default settings.

    Args:
        hyps: one hypothesis per sentence (N).
        refs: reference streams, each of length N (`refs[j][i]`: reference j of sentence i).
        keys: which of METRICS to compute (e.g. ("bleu", "chrf") for per-bucket scores).
    Returns:
        key -> MetricScore, in the order of `keys`. An empty corpus scores 0.0.
    """
    _check(hyps, refs)
    out = {}
    for key, metric in _metrics(keys).items():
        if not hyps:  # sacreBLEU raises IndexError on an empty corpus
            out[key] = MetricScore(key, 0.0, "", "empty corpus")
            continue
        result = metric.corpus_score(hyps, refs)
        out[key] = MetricScore(result.name, float(result.score), str(metric.get_signature()), result.format())
    return out


def bleu(hyps: list[str], refs: list[list[str]]) -> float:
    """Corpus BLEU (sacreBLEU defaults) of `hyps` against reference streams `refs`; 0.0 when empty."""
    _check(hyps, refs)
    if not hyps:
        return 0.0
    return float(BLEU().corpus_score(hyps, refs).score)
