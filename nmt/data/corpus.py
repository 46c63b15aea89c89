"""Read and validate parallel text: file resolution, equal line counts, cleaning rules."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from nmt.config import DataConfig, SplitSpec
from nmt.errors import DataError
from nmt.fileio import DecodeStats, count_lines, read_lines


@dataclass(frozen=True)
class SplitFiles:
    """Resolved source and target files of one split."""

    name: str
    src: Path
    tgt: Path


def _find(prefix: str, lang: str, split: str) -> Path:
    for candidate in (Path(f"{prefix}.{lang}"), Path(f"{prefix}.{lang}.gz")):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"split {split!r}: neither {prefix}.{lang} nor {prefix}.{lang}.gz exists",
        hint="check data.splits and data.src_lang/tgt_lang, and that NMT_DATA points at the data",
    )


def resolve_split(name: str, spec: SplitSpec, cfg: DataConfig) -> SplitFiles:
    """Files of a split given as a prefix (+ languages) or as explicit src/tgt paths."""
    if spec.prefix is not None:
        return SplitFiles(name, _find(spec.prefix, cfg.src_lang, name), _find(spec.prefix, cfg.tgt_lang, name))
    assert spec.src is not None and spec.tgt is not None
    for path in (spec.src, spec.tgt):
        if not Path(path).is_file():
            raise DataError(f"split {name!r}: {path}: file not found", hint="check data.splits in the config")
    return SplitFiles(name, Path(spec.src), Path(spec.tgt))


def check_line_counts(files: SplitFiles) -> int:
    """Number of lines, or DataError naming both files and counts when they differ."""
    n_src, n_tgt = count_lines(files.src), count_lines(files.tgt)
    if n_src != n_tgt:
        raise DataError(
            f"split {files.name!r}: {files.src} has {n_src:,} lines but {files.tgt} has {n_tgt:,}",
            hint="source and target files must be line-aligned",
        )
    return n_src


def read_pairs(files: SplitFiles, *, replace_invalid: bool, stats: DecodeStats) -> Iterator[tuple[str, str]]:
    """Yield (src, tgt) line pairs, stripped of surrounding whitespace."""
    src_lines = read_lines(files.src, replace_invalid=replace_invalid, stats=stats)
    tgt_lines = read_lines(files.tgt, replace_invalid=replace_invalid, stats=stats)
    for src, tgt in zip(src_lines, tgt_lines, strict=True):
        yield src.strip(), tgt.strip()


@dataclass
class CleanStats:
    """Training pairs kept and dropped, by reason."""

    kept: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: {"empty": 0, "too_long": 0, "ratio": 0})


def keep_pair(src_len: int, tgt_len: int, *, max_len: int, max_ratio: float, stats: CleanStats) -> bool:
    """Cleaning rule for one tokenised training pair (lengths in tokens); counts the reason."""
    if src_len == 0 or tgt_len == 0:
        reason = "empty"
    elif src_len > max_len or tgt_len > max_len:
        reason = "too_long"
    elif max(src_len, tgt_len) / min(src_len, tgt_len) > max_ratio:
        reason = "ratio"
    else:
        stats.kept += 1
        return True
    stats.dropped[reason] += 1
    return False
