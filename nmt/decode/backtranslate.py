"""`nmt backtranslate CKPT -i FILE -o PREFIX`: synthetic training pairs from target-side monolingual text.

A reverse model (trained from the language of FILE into the source language of the model these pairs will
train) translates every line of FILE, batched as `nmt translate` does and with its decode flags (beam,
or `--sampling --top-k K`, which gives the more varied sources Edunov et al. 2018 found to train better;
`--tgt-lang`/`--src-lang` for a multilingual reverse model). It writes two line-aligned files that
`data.splits` reads as one split: PREFIX.<output language> (the synthetic source side) and
PREFIX.<input language> (FILE's lines, the real target side), both atomically.

A pair is written unless one of these holds, each counted in the result (nothing is dropped silently):
  empty         the input line has no tokens, or the translation is empty
  too_long      either side has more than `max_len` tokens (default: the reverse model's `data.max_len`),
                counted as prepare counts them: each side's text encoded by the reverse model's
                SentencePiece models (so an unknown piece in the output counts as it will be read)
  ratio         the longer side has more than `max_ratio` times the tokens of the shorter (default: its
                `data.max_ratio`)
the same rules `nmt prepare` applies to training pairs, so the counts say what prepare would drop.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from nmt.config import DecodeConfig
from nmt.console import progress
from nmt.decode.languages import LanguageRequest, choose_route
from nmt.decode.translate import TranslateStats, load_for_decoding, read_input, translate_route
from nmt.errors import ConfigError, DataError
from nmt.fileio import DecodeStats, atomic_open

REASONS = ("empty", "too_long", "ratio")
COUNT_BATCH = 2000  # pairs whose tokens SentencePiece counts in one call


@dataclass
class BacktranslateResult:
    """What `backtranslate` read, wrote and dropped."""

    lines: int = 0
    written: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    invalid_utf8: int = 0
    files: tuple[str, str] = ("", "")  # (synthetic source file, real target file)
    decode: DecodeConfig | None = None
    elapsed_s: float = 0.0


def drop_reason(src_tokens: int, tgt_tokens: int, *, max_len: int, max_ratio: float) -> str | None:
    """Why a pair of these token counts is dropped (one of REASONS), or None when it is kept."""
    if src_tokens == 0 or tgt_tokens == 0:
        return "empty"
    if max(src_tokens, tgt_tokens) > max_len:
        return "too_long"
    if max(src_tokens, tgt_tokens) > max_ratio * min(src_tokens, tgt_tokens):
        return "ratio"
    return None


def backtranslate(
    checkpoint: Path,
    *,
    input: Path,
    prefix: Path,
    overrides: Sequence[str] = (),
    languages: LanguageRequest | None = None,
    max_len: int | None = None,
    max_ratio: float | None = None,
) -> BacktranslateResult:
    """Translate `input` with the reverse model `checkpoint` and write the kept pairs (module docstring)."""
    if not input.is_file():
        raise DataError(f"{input}: input file not found")
    loaded, decode_cfg, device = load_for_decoding(checkpoint, overrides=overrides)
    request = languages or LanguageRequest()
    route = choose_route(loaded.cfg, loaded.vocab, request, where=str(checkpoint))
    data = loaded.cfg.data
    in_lang = request.src_lang or (None if data.multilingual else data.src_lang)
    if in_lang is None:
        raise ConfigError(
            f"{checkpoint}: a multilingual model: say which language {input} is in",
            hint="give --src-lang (and --tgt-lang for the language to write)",
        )
    out_lang = route.tgt_lang
    if out_lang == in_lang:
        raise ConfigError(f"--tgt-lang {out_lang} is the language of the input: back-translation needs another")
    max_len = max_len if max_len is not None else data.max_len
    max_ratio = max_ratio if max_ratio is not None else data.max_ratio
    result = BacktranslateResult(decode=decode_cfg)
    src_path, tgt_path = Path(f"{prefix}.{out_lang}"), Path(f"{prefix}.{in_lang}")
    result.files = (str(src_path), str(tgt_path))
    read_stats, stats = DecodeStats(), TranslateStats()
    pending: deque[str] = deque()  # input lines read but not yet translated (at most a chunk)

    def remember(source: Iterator[str]) -> Iterator[str]:
        for line in source:
            pending.append(line)
            yield line

    def write(batch: list[tuple[str, str]], synthetic: IO[bytes], real: IO[bytes]) -> None:
        """Count both sides' tokens for a batch of (input line, translation) at once, then write or drop."""
        ins = [len(ids) for ids in loaded.vocab.encode_src([line for line, _ in batch])]
        outs = [len(ids) for ids in loaded.vocab.encode_tgt([text for _, text in batch])]
        for (line, text), n_in, n_out in zip(batch, ins, outs, strict=True):
            reason = drop_reason(n_out, n_in, max_len=max_len, max_ratio=max_ratio)
            if reason is not None:
                result.dropped[reason] += 1
                continue
            synthetic.write(f"{text}\n".encode())
            real.write(f"{line.strip()}\n".encode())
            result.written += 1

    start = time.perf_counter()
    with (
        atomic_open(src_path) as synthetic,
        atomic_open(tgt_path) as real,
        progress(desc="back-translating", unit=" lines") as bar,
    ):
        translations = translate_route(
            loaded, remember(read_input(input, read_stats)), decode_cfg, route,
            device=device, stats=stats, on_batch=bar.update,
        )  # fmt: skip
        batch: list[tuple[str, str]] = []
        for best in translations:
            batch.append((pending.popleft(), best[0].text))
            result.lines += 1
            if len(batch) == COUNT_BATCH:
                write(batch, synthetic, real)
                batch = []
        write(batch, synthetic, real)
    result.invalid_utf8 = read_stats.invalid_utf8_lines
    result.elapsed_s = time.perf_counter() - start
    return result
