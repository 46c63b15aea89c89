"""Reading what `nmt evaluate` scores, as the sacrebleu CLI reads it: line-aligned files, lines
split on newline only with trailing whitespace stripped, so the scores equal its scores."""

from __future__ import annotations

from pathlib import Path

from nmt.errors import DataError
from nmt.fileio import count_lines, read_lines


def check_counts(scored: Path, refs: list[Path]) -> int:
    """Line count shared by `scored` and every reference, or DataError naming both files and counts."""
    n = count_lines(scored)
    for ref in refs:
        m = count_lines(ref)
        if m != n:
            raise DataError(
                f"line counts differ: {scored} has {n:,} lines but {ref} has {m:,}",
                hint="hypotheses, sources and references must be line-aligned",
            )
    return n


def read_scored(path: Path) -> list[str]:
    """Lines as the sacrebleu CLI reads them: split on newline only, trailing whitespace stripped."""
    return [line.rstrip() for line in read_lines(path)]


def read_source(path: Path) -> list[str]:
    """Source lines for length buckets; invalid UTF-8 is replaced, as translation reads it."""
    return list(read_lines(path, replace_invalid=True))
