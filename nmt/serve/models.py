"""The models a server holds, loaded once at start-up, and the language pairs they translate: one for a
bilingual model, one per trained direction for a multilingual one (all sharing its weights), and
the pairs reached through a pivot language (two of those in a row)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from nmt.config import DecodeConfig
from nmt.data.directions import Marks, marks_for
from nmt.decode.glossary import term_glue
from nmt.decode.load import LoadedModel
from nmt.decode.translate import load_for_decoding
from nmt.errors import NmtError
from nmt.iso639 import name_of

PIVOT_FIRST = "en"  # a pivot is English when it can be, as Argos Translate pivots; else the first by code


@dataclass(frozen=True, eq=False)
class Pair:
    """A loaded model and a language pair it translates (`marks`: how a multilingual model is asked for it)."""

    source: str
    target: str
    path: Path
    loaded: LoadedModel
    decode: DecodeConfig
    device: torch.device
    marks: Marks = Marks()
    glued: torch.Tensor | None = None  # tokens that may not follow a glossary term (None: an export, no terms)

    @property
    def takes_terms(self) -> bool:
        """Whether the pair's engine enforces glossary terms (nmt's own search; not CTranslate2)."""
        return self.glued is not None

    @property
    def key(self) -> str:
        return f"{self.source}-{self.target}"

    @property
    def max_len(self) -> int:
        return self.loaded.model.max_len


def load_pairs(paths: Sequence[Path], *, overrides: Sequence[str] = ()) -> dict[tuple[str, str], Pair]:
    """Load every model (checkpoint or export) once and key it by each (source, target) pair it was
    trained on: one for a bilingual model, every direction of a multilingual one.

    Two models for the same pair are an error: a request could not say which one it means.
    """
    pairs: dict[tuple[str, str], Pair] = {}
    for path in paths:
        loaded, decode, device = load_for_decoding(path, overrides=overrides)
        glue = term_glue(loaded, device)  # once per model: the glossary's constrained search takes it
        for source, target in loaded.cfg.data.pairs:
            if (source, target) in pairs:
                raise NmtError(
                    f"{path} and {pairs[source, target].path} both translate {source}->{target}: a request names "
                    "only the languages, so the server cannot choose between them",
                    hint="serve one model per language pair (start a second server on another port for the other)",
                )
            marks = marks_for(loaded.cfg, loaded.vocab, target)
            pairs[source, target] = Pair(source, target, Path(path), loaded, decode, device, marks, glue)
    return pairs


def language_codes(pairs: dict[tuple[str, str], Pair]) -> set[str]:
    """Every language a loaded model reads or writes."""
    return {code for pair in pairs for code in pair}


def route(pairs: dict[tuple[str, str], Pair], source: str, target: str) -> tuple[Pair, ...] | None:
    """The pairs that translate `source` into `target`: the direct one, else two through a pivot
    language (English first, as Argos Translate pivots, else the first by code); None when neither
    exists. A same-language request is not asked here."""
    if (source, target) in pairs:
        return (pairs[source, target],)
    pivots = sorted(
        (pivot for s, pivot in pairs if s == source and (pivot, target) in pairs),
        key=lambda pivot: (pivot != PIVOT_FIRST, pivot),
    )
    return (pairs[source, pivots[0]], pairs[pivots[0], target]) if pivots else None


def languages(pairs: dict[tuple[str, str], Pair]) -> list[dict[str, object]]:
    """LibreTranslate's `GET /languages`: every language a model reads or writes, each with the
    targets a request can name: the direct pairs, those reached through one pivot language, and the
    language itself (a same-language request is answered with its text, as LibreTranslate does)."""
    codes = sorted(language_codes(pairs))
    return [
        {
            "code": code,
            "name": name_of(code) or code,
            "targets": [t for t in codes if t == code or route(pairs, code, t) is not None],
        }
        for code in codes
    ]
