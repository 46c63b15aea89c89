"""Read and validate parallel text: file resolution, line counts and UTF-8 in one streaming
pass, line pairs in chunks, cleaning rules."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nmt.config import DataConfig, SplitSpec
from nmt.errors import DataError
from nmt.fileio import read_raw_lines, scan_text


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


@dataclass(frozen=True)
class MonoFile:
    """One language's monolingual text (`data.monolingual`), resolved."""

    lang: str
    path: Path


def mono_part(lang: str, *, valid: bool = False) -> str:
    """The name of a language's monolingual text in the prepared data: `mono.de`, held-out lines `mono.valid.de`."""
    return f"mono.valid.{lang}" if valid else f"mono.{lang}"


def resolve_monolingual(cfg: DataConfig) -> list[MonoFile]:
    """`data.monolingual`'s files in language order (the path as given, else with .gz), or DataError naming
    the entry (a missing file; an unknown language is the config's error, `DataConfig`)."""
    files = []
    for lang in sorted(cfg.monolingual):
        path = Path(cfg.monolingual[lang])
        found = next((p for p in (path, Path(f"{path}.gz")) if p.is_file()), None)
        if found is None:
            raise DataError(
                f"data.monolingual.{lang}: {path}: file not found",
                hint="give each language a text file, one sentence per line (.gz allowed); check NMT_DATA",
            )
        files.append(MonoFile(lang, found))
    return files


def held_out(lines: int, valid_lines: int) -> int:
    """How many of a monolingual file's last lines `nmt pretrain` validates on: `pretrain.valid_lines`, at most
    a tenth of the file (0 for a file of under 10 lines)."""
    return min(valid_lines, lines // 10)


def direction_part(direction: str, split: str) -> str:
    """The name of one direction's part of a split in a multilingual dataset: `de-en/train`."""
    return f"{direction}/{split}"


def split_of(part: str) -> str:
    """The split a part belongs to: `de-en/train` -> `train`, `train~1` (a second source) -> `train`;
    a bilingual split is its own."""
    return part.rpartition("/")[2].partition("~")[0]


def source_part(split: str, k: int) -> str:
    """The name of source k of a split in the prepared data: `train` for the first, `train~1`, ... after."""
    return split if k == 0 else f"{split}~{k}"


def resolve_splits(cfg: DataConfig, *, only: str | None = None) -> tuple[list[SplitFiles], list[str]]:
    """Every split's files (or split `only`'s), and notes on what was left out.

    Bilingual: one SplitFiles per split. Multilingual (`data.directions`): one per direction and
    split, named `direction_part(...)`, its files `<prefix>.<src>` and `<prefix>.<tgt>`; train and
    valid must exist for every direction (DataError naming the direction and the file), another
    split leaves out the directions it has no files for (a note each).
    """
    splits = [
        (source_part(name, k), spec)
        for name in cfg.splits
        if only in (None, name)
        for k, spec in enumerate(cfg.sources(name))
    ]
    if not cfg.multilingual:
        return [resolve_split(name, spec, cfg) for name, spec in splits], []
    files, notes = [], []
    for name, spec in splits:
        if spec.prefix is None:
            raise DataError(
                f"data.splits.{split_of(name)}: a multilingual config (data.directions) gives each split as a prefix",
                hint=f"write {name}: <dir>/{name}; the files are <prefix>.<lang>[.gz] for every language",
            )
        for direction, (src, tgt) in zip(cfg.directions, cfg.pairs, strict=True):
            try:
                files.append(
                    SplitFiles(
                        direction_part(direction, name), _find(spec.prefix, src, name), _find(spec.prefix, tgt, name)
                    )
                )
            except DataError as exc:
                if name in ("train", "valid"):
                    raise DataError(
                        f"data.directions: {direction}: {exc.message}",
                        hint="every direction needs train and valid files; remove the direction or add its files",
                    ) from None
                what = f"split {name!r}" if "~" not in name else f"train source {spec.prefix}"
                notes.append(f"{what} has no {direction} files ({exc.message}): that direction is left out")
    return files, notes


def resolve_split(name: str, spec: SplitSpec, cfg: DataConfig) -> SplitFiles:
    """Files of a split given as a prefix (+ languages) or as explicit src/tgt paths."""
    if spec.prefix is not None:
        return SplitFiles(name, _find(spec.prefix, cfg.src_lang, name), _find(spec.prefix, cfg.tgt_lang, name))
    assert spec.src is not None and spec.tgt is not None
    for path in (spec.src, spec.tgt):
        if not Path(path).is_file():
            raise DataError(f"split {name!r}: {path}: file not found", hint="check data.splits in the config")
    return SplitFiles(name, Path(spec.src), Path(spec.tgt))


def scan_split(files: SplitFiles, *, replace_invalid: bool) -> tuple[int, int]:
    """(lines, lines with invalid UTF-8) of a split, or DataError naming the file(s), line and counts.

    Unequal line counts are reported with both counts; invalid UTF-8 (unless it is to be
    replaced) with its file, line, column and byte.
    """
    src, tgt = scan_text(files.src), scan_text(files.tgt)
    if src.lines != tgt.lines:
        raise DataError(
            f"split {files.name!r}: {files.src} has {src.lines:,} lines but {files.tgt} has {tgt.lines:,}",
            hint="source and target files must be line-aligned",
        )
    for scan in (src, tgt):
        if scan.first_invalid is not None and not replace_invalid:
            raise DataError(
                scan.first_invalid
                + (f" ({scan.invalid_lines:,} such lines in this file)" if scan.invalid_lines > 1 else ""),
                hint="re-encode the file as UTF-8, or set data.on_invalid_utf8: replace to replace and count them",
            )
    return src.lines, src.invalid_lines + tgt.invalid_lines


def raw_line_pairs(files: SplitFiles) -> Iterator[tuple[bytes, bytes]]:
    """(src, tgt) lines as bytes without line endings; the files were scanned (equal line counts)."""
    yield from zip(read_raw_lines(files.src), read_raw_lines(files.tgt), strict=True)


def to_text(raw: bytes, *, replace_invalid: bool) -> str:
    """A scanned line as stripped text (invalid bytes as U+FFFD when replacing)."""
    return raw.decode("utf-8", errors="replace" if replace_invalid else "strict").strip()


def line_pair_chunks(files: SplitFiles, *, replace_invalid: bool, size: int) -> Iterator[tuple[list[str], list[str]]]:
    """Stripped (src lines, tgt lines) of a scanned split, `size` pairs at a time."""
    src: list[str] = []
    tgt: list[str] = []
    for a, b in raw_line_pairs(files):
        src.append(to_text(a, replace_invalid=replace_invalid))
        tgt.append(to_text(b, replace_invalid=replace_invalid))
        if len(src) == size:
            yield src, tgt
            src, tgt = [], []
    if src:
        yield src, tgt


@dataclass
class CleanStats:
    """Training pairs kept and dropped, by reason."""

    kept: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: {"empty": 0, "too_long": 0, "ratio": 0})


def keep_pair(src_len: int, tgt_len: int, *, max_len: int, max_ratio: float, stats: CleanStats) -> bool:
    """Cleaning rule for one tokenised training pair (lengths in tokens); counts the reason.

    The rule as written for one pair; `keep_mask` applies it to a chunk at once.
    """
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


def keep_mask(
    src_lens: np.ndarray, tgt_lens: np.ndarray, *, max_len: int, max_ratio: float, stats: CleanStats
) -> np.ndarray:
    """`keep_pair` over arrays of lengths: (N,) True where kept; counts each drop under its first reason."""
    src_lens, tgt_lens = src_lens.astype(np.int64), tgt_lens.astype(np.int64)
    empty = (src_lens == 0) | (tgt_lens == 0)
    too_long = ~empty & ((src_lens > max_len) | (tgt_lens > max_len))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.maximum(src_lens, tgt_lens) / np.minimum(src_lens, tgt_lens)
    bad_ratio = ~empty & ~too_long & (ratio > max_ratio)
    keep = ~(empty | too_long | bad_ratio)
    stats.kept += int(keep.sum())
    for reason, mask in (("empty", empty), ("too_long", too_long), ("ratio", bad_ratio)):
        stats.dropped[reason] += int(mask.sum())
    return keep
