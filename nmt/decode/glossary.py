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
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from nmt.errors import DataError


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
