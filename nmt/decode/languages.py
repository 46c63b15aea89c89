"""Which output language a translation asks a model for, and through which pivot.

A bilingual model translates one direction: `--tgt-lang` may name its target language (a check)
and nothing else. A multilingual model (`data.directions`) needs `--tgt-lang` when it writes more
than one language. A direction it was not trained on (its source given with `--src-lang`) is
zero-shot: it runs, with a warning. `--pivot X` translates into X first and from X into the
target, both with the same model; both halves must be trained directions (the first one only
checked when the source language is known).
"""

from __future__ import annotations

from dataclasses import dataclass

from nmt.config import ExperimentConfig
from nmt.console import warn
from nmt.data.directions import Marks, marks_for
from nmt.data.vocab import Vocab
from nmt.errors import ConfigError


@dataclass(frozen=True)
class LanguageRequest:
    """What the user asked for: --tgt-lang, --src-lang, --pivot (each optional)."""

    tgt_lang: str | None = None
    src_lang: str | None = None
    pivot: str | None = None


@dataclass(frozen=True)
class Route:
    """The steps of one translation: (language written, marks asking for it), in order."""

    steps: tuple[tuple[str, Marks], ...]

    @property
    def tgt_lang(self) -> str:
        return self.steps[-1][0]


def _describe(cfg: ExperimentConfig) -> str:
    directions = ", ".join(f"{s}-{t}" for s, t in cfg.data.pairs)
    return f"its languages are {', '.join(cfg.data.languages)}; it was trained on {directions}"


def choose_route(cfg: ExperimentConfig, vocab: Vocab, request: LanguageRequest, *, where: str = "the model") -> Route:
    """The route for translating with a model of `cfg`/`vocab` as `request` asks (ConfigError for a
    language or pivot the model cannot give; a warning for a zero-shot direction)."""
    tgt_lang, src_lang, pivot = request.tgt_lang, request.src_lang, request.pivot
    pairs = cfg.data.pairs
    targets = sorted({t for _, t in pairs})
    for flag, lang in (("--tgt-lang", tgt_lang), ("--src-lang", src_lang), ("--pivot", pivot)):
        if lang is not None and lang not in cfg.data.languages:
            raise ConfigError(
                f"{flag} {lang}: {where} does not know this language; {_describe(cfg)}",
                hint=f"choose one of {', '.join(cfg.data.languages)}",
            )
    if tgt_lang is None:
        if len(targets) > 1:
            raise ConfigError(
                f"{where} writes {len(targets)} languages ({', '.join(targets)}): say which with --tgt-lang",
                hint=f"e.g. --tgt-lang {targets[0]}; {_describe(cfg)}",
            )
        tgt_lang = targets[0]
    if not cfg.data.multilingual and (tgt_lang, src_lang or pairs[0][0]) != (pairs[0][1], pairs[0][0]):
        raise ConfigError(f"{where} is bilingual ({pairs[0][0]}-{pairs[0][1]}): it cannot translate into {tgt_lang}")
    if pivot is None:
        if src_lang is not None and (src_lang, tgt_lang) not in pairs:
            warn(f"{src_lang}-{tgt_lang} is zero-shot: {where} was not trained on it (quality unknown; see --pivot)")
        return Route(((tgt_lang, marks_for(cfg, vocab, tgt_lang)),))
    missing = [f"{a}-{b}" for a, b in ((src_lang, pivot), (pivot, tgt_lang)) if a is not None and (a, b) not in pairs]
    if pivot == tgt_lang or pivot == src_lang:
        missing.append(f"--pivot {pivot} is the {'target' if pivot == tgt_lang else 'source'} language itself")
    if missing:
        raise ConfigError(
            f"--pivot {pivot}: {where} cannot translate {' or '.join(missing)}",
            hint=f"{_describe(cfg)}; a pivot needs both halves trained",
        )
    return Route(((pivot, marks_for(cfg, vocab, pivot)), (tgt_lang, marks_for(cfg, vocab, tgt_lang))))
