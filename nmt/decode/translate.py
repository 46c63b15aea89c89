"""`translate` entry point: read -> encode -> sort into batches -> search -> restore order -> write.

Input is streamed in chunks of `CHUNK_LINES` lines, so a file of any size never sits in
memory. Within a chunk, lines are SentencePiece-encoded with the checkpoint's own
vocabulary (source = pieces + [eos], exactly as training encodes them), cut to the
model's maximum length, sorted by length into token-budget batches, decoded, and
written back in input order. Every input line gives exactly `nbest` output lines:
an empty line gives empty output without running the model, nothing is dropped, and
line breaks inside a decoded text become spaces.

The model is a checkpoint (.pt, decoded by torch) or a directory written by `nmt export`
(decoded by CTranslate2, `nmt.decode.ct2`); `load_for_decoding` tells them apart, and
everything after it is the same for both.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import torch

from nmt.config import DecodeConfig, apply_decode_overrides
from nmt.console import info, progress, warn
from nmt.data.directions import Marks
from nmt.data.vocab import Vocab
from nmt.decode import ct2
from nmt.decode.alignment import attention_rows, pharaoh, prefix_words, word_links
from nmt.decode.beam import Hypothesis
from nmt.decode.constrained import Terms, contains
from nmt.decode.glossary import TermSource, check_terms, line_terms, term_glue, term_source
from nmt.decode.heatmaps import FirstLines, check_attention, write_heatmaps
from nmt.decode.languages import LanguageRequest, Route, choose_route
from nmt.decode.load import LoadedModel, load_model
from nmt.decode.markup import MarkupStats, translate_fragments
from nmt.decode.scoring import confidence, token_logprobs
from nmt.decode.search import SearchEngine, decoding_form, search
from nmt.device import resolve_device
from nmt.errors import DataError, NmtError
from nmt.export_format import read_export
from nmt.fileio import DecodeStats, atomic_open, decode_line, read_lines
from nmt.tokens import BOS_ID, EOS_ID, PAD_ID

CHUNK_LINES = 10_000  # input lines read, sorted and decoded together
# Everything Python's str.splitlines() splits on: one of these in an output would turn
# one translation into several lines for the next tool in the pipeline.
_LINE_BREAKS = re.compile("[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


@dataclass(frozen=True)
class Translation:
    """One output for one input line."""

    text: str  # detokenised, on a single line
    score: float  # the search's (length-normalised) score; 0.0 for an empty input, -inf for padding
    tokens: int  # target tokens generated (EOS excluded)
    ids: tuple[int, ...] = ()  # those target token ids (no bos/eos)
    alignment: str = ""  # Pharaoh links source word-output word (`nmt.decode.alignment`), when asked for
    confidence: float | None = None  # mean token probability (`nmt.decode.scoring.confidence`), when asked for


@dataclass
class TranslateStats:
    """What a translation run saw and repaired."""

    lines: int = 0  # input lines
    empty: int = 0  # lines with no source tokens (output left empty)
    truncated: int = 0  # lines cut to the model's maximum source length
    invalid_utf8: int = 0  # lines whose invalid UTF-8 was replaced by U+FFFD
    src_tokens: int = 0  # source tokens fed to the model (eos included)
    tgt_tokens: int = 0  # target tokens generated for the best hypotheses (EOS excluded)
    html_repaired: int = 0  # --format html: malformed lines, repaired as an HTML parser does
    html_repairs: int = 0  # ... and the repairs made (elements closed, stray end tags dropped)
    term_lines: int = 0  # --glossary/--constraints: lines with target terms to hold
    terms: int = 0  # ... the terms they required (a term required twice counts twice)
    terms_missed_lines: int = 0  # ... lines whose best output misses one: its length limit came first
    terms_unwritable: int = 0  # ... terms dropped: the target vocabulary cannot spell them


@dataclass(frozen=True)
class TranslateResult:
    """Summary of `translate`."""

    stats: TranslateStats
    decode: DecodeConfig
    device: str
    elapsed_s: float
    output: Path | None


# ---------------------------------------------------------------- decode settings


def load_for_decoding(
    checkpoint: Path, *, base: DecodeConfig | None = None, overrides: Sequence[str] = ()
) -> tuple[LoadedModel, DecodeConfig, torch.device]:
    """Load a checkpoint (.pt) or an exported model directory and settle the decode settings and device.

    Args:
        checkpoint: a checkpoint file, or a directory written by `nmt export` (CTranslate2).
        base: decode settings to start from; None = the checkpoint's (or export's) stored ones.
        overrides: `decode.KEY=VALUE` strings applied on top (flags and --set).
    """
    if Path(checkpoint).is_dir():
        return _load_export_for_decoding(Path(checkpoint), base=base, overrides=overrides)
    loaded = load_model(checkpoint, device="cpu")
    decode_cfg = apply_decode_overrides(
        base if base is not None else loaded.cfg.decode, overrides, where=f"{checkpoint} decode settings"
    )
    device = resolve_device(decode_cfg.device)
    loaded.model.to(device)  # type: ignore[union-attr]
    # loaded only to decode: converted in place, once, and decoded by every search of this load
    loaded.model = decoding_form(loaded.model, device, decode_cfg.precision, in_place=True)
    return loaded, decode_cfg, device


def _load_export_for_decoding(
    path: Path, *, base: DecodeConfig | None, overrides: Sequence[str]
) -> tuple[LoadedModel, DecodeConfig, torch.device]:
    """`load_for_decoding` for an export: settings first (they pick CTranslate2's device and
    compute type), refused when the engine cannot honour them, then the engine."""
    info = read_export(path)
    where = f"{path} decode settings"
    decode_cfg = apply_decode_overrides(base if base is not None else info.cfg.decode, overrides, where=where)
    ct2.check_decode(decode_cfg, where=where)
    device = resolve_device(decode_cfg.device)
    return ct2.load_export(info, device=device.type, precision=decode_cfg.precision), decode_cfg, device


# ---------------------------------------------------------------- text in, text out


def source_ids(loaded: LoadedModel, lines: list[str], marks: Marks | None = None) -> tuple[list[list[int]], int]:
    """Source ids as the model reads them (the source tag of `marks` if any, pieces cut to fit
    max_len, then eos; [] for a line with no tokens), and how many lines were cut."""
    tag = [] if marks is None or marks.src_tag is None else [marks.src_tag]
    limit = loaded.model.max_len - 1 - len(tag)  # room for the eos (and the tag)
    ids = loaded.vocab.encode_src(lines)
    return [tag + s[:limit] + [EOS_ID] if s else [] for s in ids], sum(len(s) > limit for s in ids)


def translate_lines(
    loaded: LoadedModel,
    lines: Iterable[str],
    decode_cfg: DecodeConfig,
    *,
    device: torch.device,
    stats: TranslateStats | None = None,
    on_batch: Callable[[int], object] | None = None,
    chunk_lines: int = CHUNK_LINES,
    marks: Marks | None = None,
    alignments: bool = False,
    confidences: bool = False,
    terms_from: TermSource | None = None,
) -> Iterator[list[Translation]]:
    """Translate text lines, yielding exactly `decode_cfg.nbest` translations per line, in input order.

    `marks`: how to ask a multilingual model for its output language (`nmt.decode.languages`).
    `alignments`: give each translation its word alignment (`nmt.decode.alignment`); `confidences`: its
    confidence (`nmt.decode.scoring.confidence`; 0.0 for an empty output). `terms_from`: the target terms
    each line's translation must hold (a glossary's or the line's own, `nmt.decode.glossary`), enforced by
    constrained beam search (`nmt.decode.constrained`).

    Lines are consumed `chunk_lines` at a time. A line with no source tokens (empty or
    whitespace) yields empty texts with score 0.0; when the search finds fewer than nbest
    hypotheses, the rest are empty with score -inf. `stats` (lines, empty, truncated,
    tokens) is updated as chunks complete.
    """
    stats = stats if stats is not None else TranslateStats()
    model, vocab, nbest = loaded.model, loaded.vocab, decode_cfg.nbest
    glued = term_glue(loaded, device) if terms_from is not None else None  # once for the whole input
    it = iter(lines)
    while chunk := list(itertools.islice(it, chunk_lines)):
        terms: list[Terms] | None = None
        if terms_from is not None:
            chunk, terms, unwritable = line_terms(vocab, [terms_from.split(line) for line in chunk])
            stats.terms_unwritable += unwritable
        src, truncated = source_ids(loaded, chunk, marks)
        if terms is not None:
            terms = [t if s else [] for t, s in zip(terms, src, strict=True)]  # an empty line gets empty output
        stats.lines += len(chunk)
        stats.truncated += truncated
        stats.empty += sum(not s for s in src)
        stats.src_tokens += sum(len(s) for s in src)
        start_id = marks.start_id if marks is not None else BOS_ID
        hyps = search(
            model, src, decode_cfg, device=device, on_batch=on_batch, start_id=start_id, terms=terms, glued=glued
        )
        done = to_translations(vocab, src, hyps, nbest=nbest)
        if terms is not None:
            count_terms(stats, terms, done)
        if alignments:
            done = with_alignments(loaded, chunk, src, done, start_id=start_id, marks=marks, device=device)
        if confidences:
            done = with_confidences(loaded, src, done, start_id=start_id, device=device)
        for translations in done:
            stats.tgt_tokens += translations[0].tokens
            yield translations
        if on_batch is not None:
            on_batch(sum(not s for s in src))  # empty lines count as done too


def count_terms(stats: TranslateStats, terms: list[Terms], translations: list[list[Translation]]) -> None:
    """Count the lines with terms, the terms, and the lines whose best output misses one."""
    for row, found in zip(terms, translations, strict=True):
        if row:
            stats.term_lines += 1
            stats.terms += len(row)
            stats.terms_missed_lines += not contains(found[0].ids, row)


def to_translations(
    vocab: Vocab, src: list[list[int]], hyps: list[list[Hypothesis]], *, nbest: int
) -> list[list[Translation]]:
    """Exactly `nbest` translations per source (ids as `source_ids` gives them) from its hypotheses:
    empty texts with score 0.0 for a source with no tokens, empty ones with score -inf where the
    search found fewer than nbest; line breaks inside a text become spaces."""
    texts = iter(vocab.decode_tgt([h.tokens for row in hyps for h in row]))
    out: list[list[Translation]] = []
    for seq, row in zip(src, hyps, strict=True):
        if not seq:
            out.append([Translation("", 0.0, 0)] * nbest)
            continue
        found = [Translation(_LINE_BREAKS.sub(" ", next(texts)), h.score, len(h.tokens), tuple(h.tokens)) for h in row]
        out.append(found + [Translation("", float("-inf"), 0)] * (nbest - len(found)))
    return out


def with_alignments(
    loaded: LoadedModel,
    lines: list[str],
    src: list[list[int]],
    translations: list[list[Translation]],
    *,
    start_id: int,
    marks: Marks | None,
    device: torch.device,
) -> list[list[Translation]]:
    """`translations` with their word alignments (every hypothesis of every line; none for an empty one):
    source words are the whitespace tokens of the line, output words those of the text."""
    vocab = loaded.vocab
    tag = None if marks is None else marks.src_tag
    jobs = [(k, n) for k, row in enumerate(translations) for n, t in enumerate(row) if src[k] and t.ids]
    rows = attention_rows(
        loaded.model, [src[k] for k, _ in jobs], [translations[k][n].ids for k, n in jobs], start_id=start_id,
        device=device,
    )  # fmt: skip
    out = [list(row) for row in translations]
    src_words: dict[int, list[int]] = {}
    for k, _ in jobs:
        if k not in src_words:  # the tag and eos are no words; the rest decoded prefix by prefix
            text = [i for i in src[k] if i not in (PAD_ID, BOS_ID, EOS_ID) and i != tag]
            words = iter(
                prefix_words(vocab.decode_src([text[: m + 1] for m in range(len(text))]), count=len(lines[k].split()))
            )
            src_words[k] = [-1 if i in (PAD_ID, BOS_ID, EOS_ID) or i == tag else next(words) for i in src[k]]
    for (k, n), weights in zip(jobs, rows, strict=True):
        t = translations[k][n]
        ids = list(t.ids)
        tgt_words = prefix_words(vocab.decode_tgt([ids[: m + 1] for m in range(len(ids))]), count=len(t.text.split()))
        out[k][n] = dataclasses.replace(t, alignment=pharaoh(word_links(weights, src_words[k], tgt_words)))
    return out


def with_confidences(
    loaded: LoadedModel,
    src: list[list[int]],
    translations: list[list[Translation]],
    *,
    start_id: int,
    device: torch.device,
) -> list[list[Translation]]:
    """`translations` with their confidences, from one teacher-forced pass over every hypothesis (an empty
    output, or the output of an empty line, gets 0.0)."""
    jobs = [(k, n) for k, row in enumerate(translations) for n, t in enumerate(row) if src[k] and t.ids]
    logprobs = token_logprobs(
        loaded.model, [src[k] for k, _ in jobs], [translations[k][n].ids for k, n in jobs], start_id=start_id,
        device=device,
    )  # fmt: skip
    out = [[dataclasses.replace(t, confidence=0.0) for t in row] for row in translations]
    for (k, n), lp in zip(jobs, logprobs, strict=True):
        out[k][n] = dataclasses.replace(translations[k][n], confidence=confidence(lp))
    return out


def format_translations(
    translations: list[Translation], *, scores: bool, alignments: bool = False, confidences: bool = False
) -> str:
    """The output lines for one input line, each ending in a newline:
    `[score<TAB>][confidence<TAB>][alignment<TAB>]text` (the text last, so that a tab inside it never shifts
    a column)."""
    return "".join(
        (f"{t.score:.4f}\t" if scores else "")
        + (f"{t.confidence or 0.0:.4f}\t" if confidences else "")
        + (f"{t.alignment}\t" if alignments else "")
        + f"{t.text}\n"
        for t in translations
    )


def read_input(path: Path | None, stats: DecodeStats) -> Iterator[str]:
    """Lines of a file (plain or .gz) or of stdin (None), invalid UTF-8 replaced and counted."""
    if path is not None:
        yield from read_lines(path, replace_invalid=True, stats=stats)
        return
    for lineno, raw in enumerate(sys.stdin.buffer, start=1):
        raw = raw.rstrip(b"\n").rstrip(b"\r")
        yield decode_line(raw, path="<stdin>", lineno=lineno, replace=True, stats=stats)


@contextlib.contextmanager
def open_output(path: Path | None) -> Iterator[IO[bytes]]:
    """A file written atomically (complete or untouched), or stdout (None)."""
    if path is None:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    with atomic_open(path, "wb") as fh:
        yield fh


def warn_repairs(stats: TranslateStats, *, max_len: int) -> None:
    """One warning per kind of repair made to the input."""
    if stats.truncated:
        warn(
            f"{stats.truncated:,} input lines were longer than the model's {max_len - 1} source tokens and were "
            "truncated"
        )
    if stats.invalid_utf8:
        warn(f"{stats.invalid_utf8:,} input lines had invalid UTF-8, replaced by U+FFFD")
    if stats.terms_missed_lines:
        warn(
            f"{stats.terms_missed_lines:,} of {stats.term_lines:,} lines with target terms were translated without "
            "all of them: the output length limit (decode.max_len_a / max_len_b) came first"
        )
    if stats.terms_unwritable:
        warn(
            f"{stats.terms_unwritable:,} target terms were not enforced: they hold characters the model's "
            "target vocabulary cannot write (it would write the unknown sign)"
        )
    if stats.html_repaired:
        warn(
            f"{stats.html_repaired:,} input lines were malformed HTML, repaired as an HTML parser does "
            f"({stats.html_repairs:,} repairs: elements left open closed, end tags that close nothing dropped)"
        )


def translate(
    checkpoint: Path,
    *,
    input: Path | None,
    output: Path | None,
    overrides: Sequence[str] = (),
    scores: bool = False,
    alignments: bool = False,
    attention_dir: Path | None = None,
    attention_lines: int = 10,
    languages: LanguageRequest | None = None,
    markup: str = "text",
    confidences: bool = False,
    glossary: Path | None = None,
    constraints: bool = False,
) -> TranslateResult:
    """Translate a file or stdin with a checkpoint (or an exported directory) into a file or stdout.

    Args:
        overrides: `decode.KEY=VALUE` strings applied to the checkpoint's decode settings.
        scores: write `score<TAB>text` lines.
        alignments: write each line's word alignment before its text (`nmt.decode.alignment`).
        confidences: write each line's confidence after its score (`nmt.decode.scoring.confidence`).
        attention_dir: write attention heatmaps of the first `attention_lines` lines here (see
            `nmt.decode.heatmaps`); the translations are the same with or without.
        languages: --tgt-lang/--src-lang/--pivot (`nmt.decode.languages`).
        markup: "html": each line is an HTML fragment, translated with its markup kept (`nmt.decode.markup`).
        glossary: a glossary file whose target terms the translations must hold (`nmt.decode.glossary`).
        constraints: each input line is `text<TAB>term<TAB>...`, the terms its translation must hold.
    """
    if input is not None and not input.is_file():
        raise DataError(f"{input}: input file not found")
    terms_from = term_source(glossary, constraints=constraints, markup=markup)
    loaded, decode_cfg, device = load_for_decoding(checkpoint, overrides=overrides)
    route = choose_route(loaded.cfg, loaded.vocab, languages or LanguageRequest(), where=str(checkpoint))
    if terms_from is not None:
        check_terms(checkpoint, loaded, route, decode_cfg)
    if markup == "html":
        _check_html(checkpoint, loaded, route, decode_cfg, scores=scores, alignments=alignments,
                    attention=attention_dir is not None, confidence=confidences, device=device)  # fmt: skip
        return _translate_html(
            loaded, decode_cfg, route, input=input, output=output, device=device, terms_from=terms_from
        )
    if attention_dir is not None:  # fail before translating, not after
        _check_heatmaps(checkpoint, loaded, device=device)
    if alignments:
        _check_alignments(checkpoint, loaded, route, device=device)
    stats, read_stats = TranslateStats(), DecodeStats()
    interactive = input is None and sys.stdin.isatty()  # answer each typed line at once
    first = FirstLines(attention_lines if attention_dir is not None else 0)  # kept for the heatmaps
    start = time.perf_counter()
    with (
        open_output(output) as sink,
        progress(desc="translating", unit=" lines", force=None if output is not None else False) as bar,
    ):
        for translations in translate_route(
            loaded,
            first.watch(read_input(input, read_stats)),
            decode_cfg,
            route,
            device=device,
            stats=stats,
            on_batch=bar.update,
            chunk_lines=1 if interactive else CHUNK_LINES,
            alignments=alignments,
            confidences=confidences,
            terms_from=terms_from,
        ):
            line = format_translations(translations, scores=scores, alignments=alignments, confidences=confidences)
            sink.write(line.encode("utf-8"))
            if interactive:
                sink.flush()
            first.record(translations[0].ids)
    stats.invalid_utf8 = read_stats.invalid_utf8_lines
    elapsed_s = time.perf_counter() - start
    warn_repairs(stats, max_len=loaded.model.max_len)
    report_terms(stats)
    if output is not None:
        _report_speed(stats, elapsed_s, device=device, output=output)
    if attention_dir is not None:
        write_heatmaps(loaded, source_ids(loaded, first.lines)[0], first.best, attention_dir, device=device)
    return TranslateResult(stats, decode_cfg, device.type, elapsed_s, output)


def translate_route(
    loaded: LoadedModel,
    lines: Iterable[str],
    decode_cfg: DecodeConfig,
    route: Route,
    *,
    device: torch.device,
    stats: TranslateStats,
    on_batch: Callable[[int], object] | None = None,
    chunk_lines: int = CHUNK_LINES,
    alignments: bool = False,
    confidences: bool = False,
    terms_from: TermSource | None = None,
) -> Iterator[list[Translation]]:
    """`translate_lines` along `route`: with a pivot, each line's best translation into the pivot
    language is translated into the target (chunk by chunk; `stats` count the last step). Target terms
    (`terms_from`) need a route without a pivot (`check_terms`)."""
    for _, marks in route.steps[:-1]:
        lines = best_translations(
            loaded, lines, decode_cfg, device=device, stats=TranslateStats(), marks=marks, chunk_lines=chunk_lines
        )  # the same chunks: a line typed at a terminal goes through every step at once
    yield from translate_lines(
        loaded, lines, decode_cfg, device=device, stats=stats, on_batch=on_batch, chunk_lines=chunk_lines,
        marks=route.steps[-1][1], alignments=alignments, confidences=confidences, terms_from=terms_from,
    )  # fmt: skip


def _check_heatmaps(checkpoint: Path, loaded: LoadedModel, *, device: torch.device) -> None:
    """NmtError unless attention heatmaps can be drawn: a checkpoint (not an export), matplotlib installed,
    and a model that gives attention weights (`check_attention`)."""
    if isinstance(loaded.model, SearchEngine):
        raise NmtError(
            f"{checkpoint}: --attention-dir needs the checkpoint (.pt): an exported CTranslate2 model "
            "does not give attention weights",
            hint="draw the heatmaps with the checkpoint the export came from",
        )
    if loaded.cfg.data.multilingual:  # the heatmaps' teacher-forced pass starts from BOS, without the language token
        raise NmtError(
            f"{checkpoint}: --attention-dir does not draw heatmaps for multilingual models yet",
            hint="translate without --attention-dir",
        )
    from nmt.plots import require_matplotlib

    require_matplotlib()
    check_attention(loaded.model, device=device)


def _check_html(
    checkpoint: Path,
    loaded: LoadedModel,
    route: Route,
    decode_cfg: DecodeConfig,
    *,
    scores: bool,
    alignments: bool,
    attention: bool,
    confidence: bool,
    device: torch.device,
) -> None:
    """NmtError before translating for what `--format html` cannot do: several outputs or extra columns per
    line, heatmaps, and whatever word alignments cannot (`_check_alignments`: the markup goes by them)."""
    flags = [("--scores", scores), ("--confidence", confidence), ("--alignments", alignments)]
    flags.append(("--attention-dir", attention))
    extra = [f for f, on in flags if on]
    if decode_cfg.nbest > 1:
        extra.append("--nbest > 1")
    if extra:
        raise NmtError(
            f"--format html writes one HTML fragment per input line; {', '.join(extra)} cannot go with it",
            hint="translate HTML without them, or plain text with them",
        )
    _check_alignments(checkpoint, loaded, route, device=device)


def fits_model(loaded: LoadedModel, marks: Marks | None) -> Callable[[list[str]], bool]:
    """Whether a piece of text (its words) fits the model's source length, with its tag and eos."""
    limit = loaded.model.max_len - 1 - (marks is not None and marks.src_tag is not None)
    return lambda words: len(loaded.vocab.encode_src([" ".join(words)])[0]) <= limit


def _translate_html(
    loaded: LoadedModel,
    decode_cfg: DecodeConfig,
    route: Route,
    *,
    input: Path | None,
    output: Path | None,
    device: torch.device,
    terms_from: TermSource | None = None,
) -> TranslateResult:
    """`translate --format html`: every line an HTML fragment, `CHUNK_LINES` lines at a time (one at a time
    at a terminal), its text translated with word alignments and its markup put back (`nmt.decode.markup`).
    A glossary (`terms_from`) binds each piece of text translated."""
    stats, read_stats, markup_stats = TranslateStats(), DecodeStats(), MarkupStats()
    marks = route.steps[-1][1]

    def translate_texts(texts: list[str]) -> list[tuple[str, str]]:
        found = translate_lines(
            loaded, texts, decode_cfg, device=device, stats=stats, marks=marks, alignments=True,
            chunk_lines=max(len(texts), 1), terms_from=terms_from,
        )  # fmt: skip
        return [(t[0].text, t[0].alignment) for t in found]

    interactive = input is None and sys.stdin.isatty()
    lines_in = read_input(input, read_stats)
    start, n_lines = time.perf_counter(), 0
    with (
        open_output(output) as sink,
        progress(desc="translating", unit=" lines", force=None if output is not None else False) as bar,
    ):
        while chunk := list(itertools.islice(lines_in, 1 if interactive else CHUNK_LINES)):
            done = translate_fragments(chunk, translate_texts, fits=fits_model(loaded, marks), stats=markup_stats)
            sink.write("".join(f"{line}\n" for line in done).encode("utf-8"))
            if interactive:
                sink.flush()
            n_lines += len(chunk)
            bar.update(len(chunk))
    elapsed_s = time.perf_counter() - start
    stats.lines, stats.invalid_utf8 = n_lines, read_stats.invalid_utf8_lines
    stats.html_repaired, stats.html_repairs = markup_stats.repaired_lines, markup_stats.repairs
    warn_repairs(stats, max_len=loaded.model.max_len)
    if output is not None:
        _report_speed(stats, elapsed_s, device=device, output=output)
    return TranslateResult(stats, decode_cfg, device.type, elapsed_s, output)


def _check_alignments(checkpoint: Path, loaded: LoadedModel, route: Route, *, device: torch.device) -> None:
    """NmtError before translating when word alignments cannot be given: a pivot (the links would be to the
    pivot text) or a model without attention."""
    if len(route.steps) > 1:
        raise NmtError(
            "--alignments with --pivot: the links would be to the pivot language's text, not to the input",
            hint="translate without --pivot, or without --alignments",
        )
    attention_rows(loaded.model, [[EOS_ID]], [[EOS_ID]], start_id=BOS_ID, device=device)  # NmtError if none


def report_terms(stats: TranslateStats) -> None:
    """One line on stderr when target terms were given: how many, in how many lines, how many held."""
    if stats.term_lines:
        held = stats.term_lines - stats.terms_missed_lines
        info(f"target terms: {stats.terms:,} in {stats.term_lines:,} lines; every term held in {held:,} of them")


def _report_speed(stats: TranslateStats, elapsed_s: float, *, device: torch.device, output: Path) -> None:
    """One line on stderr: lines translated, time, lines per second, device and output file."""
    info(
        f"translated {stats.lines:,} lines in {elapsed_s:.1f} s ({stats.lines / max(elapsed_s, 1e-9):,.1f} "
        f"lines/s) on {device.type} -> {output}"
    )


def best_translations(
    loaded: LoadedModel,
    lines: Iterable[str],
    decode_cfg: DecodeConfig,
    *,
    device: torch.device,
    stats: TranslateStats,
    on_batch: Callable[[int], object] | None = None,
    marks: Marks | None = None,
    chunk_lines: int = CHUNK_LINES,
) -> Iterator[str]:
    """The best translation text of each line (nbest forced to 1), in order."""
    cfg = dataclasses.replace(decode_cfg, nbest=1)
    for translations in translate_lines(
        loaded, lines, cfg, device=device, stats=stats, on_batch=on_batch, marks=marks, chunk_lines=chunk_lines
    ):
        yield translations[0].text
