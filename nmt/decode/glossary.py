"""Glossaries: which target terms a source line's translation must hold (the glossary file format's owner).

A glossary file is UTF-8 text, one entry per line: `source term<TAB>target term`. Blank lines and
lines starting with `#` are skipped; anything else with other than exactly two non-empty
tab-separated fields, invalid UTF-8, or a source term listed twice with different target terms
is a `DataError` naming the file and line. `/translate` requests carry the same pairs as JSON
(`parse_pairs`).

Matching (`Glossary.terms`): a source term matches case-insensitively (Unicode simple case
folding) where it stands as whole words: not preceded or followed by a letter, digit or
underscore. Matches do not overlap: scanning left to right, at each position the longest source
term wins (a glossary with "New York" and "York" gives "New York" once for "new york"). Each
match requires its target term once more: a source term that occurs twice requires its target
term twice. Target terms are enforced verbatim (their case as written) by the constrained search
(`nmt.decode.constrained`).

`--constraints` input instead carries a line's target terms after its text, tab-separated, as
fairseq-interactive's `--constraints` reads them (`inline_terms`).

The last part turns terms into what the search takes (`nmt.decode.constrained`): where they come
from (`term_source`), whether the loaded engine can enforce them (`check_terms`), their token ids
(`line_terms`) and the mask of tokens that may not follow a term (`term_glue`, built once per load).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from nmt.config import DecodeConfig
from nmt.data.vocab import Vocab
from nmt.decode.constrained import Terms, word_continuations
from nmt.decode.languages import Route
from nmt.decode.load import LoadedModel
from nmt.decode.search import SearchEngine
from nmt.errors import DataError, NmtError
from nmt.tokens import UNK_ID


@dataclass(frozen=True)
class Glossary:
    """Source term -> target term entries, and the pattern that finds the source terms in a line."""

    entries: tuple[tuple[str, str], ...]
    _pattern: re.Pattern[str] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, str]], *, where: str) -> Glossary:
        """A glossary from (source, target) pairs; a ValueError (text naming `where`) for an empty term
        or a source term given two different target terms."""
        targets: dict[str, str] = {}
        entries: list[tuple[str, str]] = []
        for n, (source, target) in enumerate(pairs, start=1):
            source, target = source.strip(), target.strip()
            if not source or not target:
                raise ValueError(f"{where}: entry {n} has an empty {'source' if not source else 'target'} term")
            key = source.casefold()
            if key in targets:
                if targets[key] != target:
                    raise ValueError(
                        f"{where}: entry {n}: source term {source!r} is already given the target term "
                        f"{targets[key]!r}, not {target!r}"
                    )
                continue
            targets[key] = target
            entries.append((source, target))
        if not entries:
            return cls(())
        ordered = sorted(range(len(entries)), key=lambda i: -len(entries[i][0]))  # longest first: it wins
        body = "|".join(f"(?P<t{i}>{re.escape(entries[i][0])})" for i in ordered)
        return cls(tuple(entries), re.compile(rf"(?<!\w)(?:{body})(?!\w)", re.IGNORECASE))

    def terms(self, line: str) -> list[str]:
        """The target terms `line`'s translation must hold, one per match, in order of the matches."""
        if self._pattern is None:
            return []
        return [self.entries[int(m.lastgroup[1:])][1] for m in self._pattern.finditer(line) if m.lastgroup]

    def split(self, line: str) -> tuple[str, list[str]]:
        """`line` and the target terms its translation must hold (a `TermSource`)."""
        return line, self.terms(line)

    def __len__(self) -> int:
        return len(self.entries)


class TermSource(Protocol):
    """Where a line's target terms come from: a `Glossary` or `InlineTerms`."""

    def split(self, line: str) -> tuple[str, list[str]]:
        """The text to translate and the target terms its translation must hold."""
        ...


def read_glossary(path: Path) -> Glossary:
    """Read a glossary file (the module docstring gives the format); DataError naming the file and line."""
    if not path.is_file():
        raise DataError(f"{path}: glossary file not found")
    pairs: list[tuple[str, str]] = []
    lines: list[int] = []
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\n").rstrip("\r")
            except UnicodeDecodeError as err:
                raise DataError(
                    f"{path}:{lineno}: not valid UTF-8 (byte {err.start + 1} of the line)",
                    hint="save the glossary as UTF-8",
                ) from None
            if lineno == 1:
                line = line.removeprefix("\ufeff")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            fields = line.split("\t")
            if len(fields) != 2:
                raise DataError(
                    f"{path}:{lineno}: expected 'source term<TAB>target term', found {len(fields)} tab-separated "
                    f"field{'s' if len(fields) != 1 else ''}",
                    hint="one entry per line, the two terms separated by one tab; '#' starts a comment line",
                )
            pairs.append((fields[0], fields[1]))
            lines.append(lineno)
    try:
        return Glossary.of(pairs, where=str(path))
    except ValueError as err:
        entry = re.match(rf"{re.escape(str(path))}: entry (\d+)(.*)", str(err), re.DOTALL)
        message = (
            f"{path}:{lines[int(entry.group(1)) - 1]}: {entry.group(2).lstrip(':').strip()}" if entry else str(err)
        )
        raise DataError(message, hint="one target term per source term; both terms non-empty") from None


def parse_pairs(value: object, *, where: str) -> Glossary:
    """A glossary from a JSON value: a list of [source term, target term] pairs; ValueError otherwise."""
    if not isinstance(value, list):
        raise ValueError(f"{where} must be a list of [source term, target term] pairs")
    pairs: list[tuple[str, str]] = []
    for n, pair in enumerate(value, start=1):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
            raise ValueError(f"{where}: entry {n} is not a [source term, target term] pair of strings")
        pairs.append((pair[0], pair[1]))
    return Glossary.of(pairs, where=where)


def inline_terms(line: str) -> tuple[str, list[str]]:
    """A `--constraints` input line: its text and the target terms after it (tab-separated; empty ones
    skipped)."""
    text, *terms = line.split("\t")
    return text, [t.strip() for t in terms if t.strip()]


class InlineTerms:
    """`--constraints`: each input line brings its own target terms (`inline_terms`)."""

    def split(self, line: str) -> tuple[str, list[str]]:
        return inline_terms(line)


# ---------------------------------------------------------------- terms for the search


def term_source(glossary: Path | None, *, constraints: bool, markup: str = "text") -> TermSource | None:
    """Where the target terms come from: a glossary file, the input lines (`--constraints`), or nowhere.
    A bad glossary file is a DataError before any model is loaded."""
    if glossary is not None and constraints:
        raise NmtError(
            "--glossary and --constraints both give target terms; use one",
            hint="--glossary FILE matches its source terms in every line; --constraints reads "
            "'text<TAB>term<TAB>...' lines",
        )
    if constraints and markup == "html":
        raise NmtError("--constraints reads plain text lines with tab-separated terms, not HTML (--format html)")
    if glossary is not None:
        return read_glossary(glossary)
    return InlineTerms() if constraints else None


def check_terms(checkpoint: Path, loaded: LoadedModel, route: Route, decode_cfg: DecodeConfig) -> None:
    """NmtError before translating when target terms cannot be enforced: an exported model (CTranslate2
    has no positive lexical constraints), sampling, or a pivot (the terms would bind the pivot text)."""
    if isinstance(loaded.model, SearchEngine):
        raise NmtError(
            f"{checkpoint}: glossary terms are enforced by nmt's constrained beam search, which needs the "
            "checkpoint (.pt) and its own engine: CTranslate2, which decodes an exported model, has no "
            "constraints that require words in the output",
            hint="translate with the checkpoint the export came from (nmt translate CHECKPOINT.pt --glossary ...)",
        )
    if decode_cfg.sampling:
        raise NmtError("glossary terms need beam search, not sampling", hint="drop --sampling")
    if len(route.steps) > 1:
        raise NmtError(
            "glossary terms with --pivot: the terms would bind the pivot language's text, not the output",
            hint="translate without --pivot",
        )


def term_glue(loaded: LoadedModel, device: torch.device) -> torch.Tensor | None:
    """The (V,) mask of target tokens that may not follow a term (`nmt.decode.constrained.word_continuations`),
    built once per loaded model by the caller of the search; None for an engine that takes no terms."""
    if not isinstance(loaded.model, torch.nn.Module):
        return None
    return torch.tensor(word_continuations(loaded.vocab.target_pieces()), dtype=torch.bool, device=device)


def line_terms(vocab: Vocab, split: list[tuple[str, list[str]]]) -> tuple[list[str], list[Terms], int]:
    """The texts of `TermSource.split` results, their target terms as target token ids, and how many terms
    were dropped: a term the target vocabulary cannot spell (a character it encodes as unknown) would
    come out with the unknown sign in it."""
    flat = [t for _, terms in split for t in terms]
    ids = iter(vocab.encode_tgt(flat) if flat else [])
    terms = [[tuple(next(ids)) for _ in line_terms] for _, line_terms in split]
    unwritable = sum(UNK_ID in t for row in terms for t in row)
    return [text for text, _ in split], [[t for t in row if t and UNK_ID not in t] for row in terms], unwritable
