"""`nmt prepare`: parallel text -> cleaned pairs -> SentencePiece -> binarized splits, streamed.

Nothing holds a split in memory, so memory stays flat in the corpus size:
1. one pass per file counts lines and checks UTF-8 (unequal counts and invalid bytes are
   reported with file and line before any work);
2. SentencePiece trains on at most `vocab.max_sentences` sentences, drawn reproducibly by
   position (`vocab.sample_sentences`), decoding only the lines drawn;
3. each split is encoded in chunks of ENCODE_CHUNK pairs (SentencePiece encodes a chunk on
   every core), cleaned (train only) and appended to shard files of `data.shard_size`
   sentences. The output does not depend on the number of threads.

Splits other than train are never cleaned, so their examples align with their input lines;
their raw target text is kept too (`<split>.ref.txt`, one line per example), because
validation scores against the references as written, not as decoded back from token ids
(NFKC-normalised, unknown characters lost). It lives in the prepared data so that a resume
on another machine does not need the original files.

`<workdir>/data` is a symbolic link to a complete dataset directory `data.<id>`. Everything
is built in a staging directory and becomes `data.<id>`; one rename of a new link over the
old link switches datasets, so at every instant `data` is the old dataset or the new one,
never a part of either. A killed run leaves a staging directory or an unused `data.<id>`,
removed by the next run; a full disk ends with a DataError and the old data in place.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from nmt.checkpoint import read_checkpoint
from nmt.config import ExperimentConfig
from nmt.console import progress
from nmt.data import prepared
from nmt.data.binarize import ShardWriter, token_dtype
from nmt.data.corpus import (
    CleanStats,
    MonoFile,
    SplitFiles,
    direction_part,
    held_out,
    keep_mask,
    line_pair_chunks,
    mono_part,
    raw_line_pairs,
    resolve_monolingual,
    resolve_splits,
    scan_split,
    split_of,
    to_text,
)
from nmt.data.prepared import SplitSummary
from nmt.data.vocab import Vocab, train_multilingual_vocab, train_vocab
from nmt.errors import ConfigError, DataError
from nmt.experiment import Experiment
from nmt.fileio import (
    atomic_directory,
    exclusive_lock,
    foreign_link,
    foreign_link_error,
    read_raw_lines,
    remove_unlinked,
    scan_text,
)
from nmt.tokens import mask_piece, tag_piece

ENCODE_CHUNK = 20_000  # pairs encoded at a time: bounds memory (a few MB of ids), keeps every core busy
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


@dataclass
class PrepareResult:
    up_to_date: bool
    manifest: dict[str, Any]
    splits: list[SplitSummary] = field(default_factory=list)
    invalid_utf8_lines: int = 0
    # seconds per phase: scan, spm_train (sampling + training), encode
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what was left out (a multilingual test split's missing direction)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def prepare(
    cfg: ExperimentConfig, *, force: bool = False, threads: int | None = None, replace_data_link: bool = False
) -> PrepareResult:
    """Build (or confirm up to date) the vocabulary and binarized splits of an experiment.

    `threads`: SentencePiece's threads for encoding (default: every core); the output is the
    same for any value. Training always uses every core (the model records its thread count).
    A `<workdir>/data` that prepare did not make is a DataError before any work; with
    `replace_data_link` a symbolic link of the user's is replaced (its target never touched).
    """
    exp = Experiment.from_config(cfg)
    if not cfg.data.splits:
        raise ConfigError(
            "data.splits is empty", hint="list at least train and valid, e.g. train: ${NMT_DATA}/multi30k/train"
        )
    files, notes = resolve_splits(cfg.data)
    mono = resolve_monolingual(cfg.data)
    inputs = {
        f.name: {"src": str(f.src), "tgt": str(f.tgt), "src_sha256": _sha256(f.src), "tgt_sha256": _sha256(f.tgt)}
        for f in files
    }
    for m in mono:  # one file read as both sides of its examples
        digest = _sha256(m.path)
        inputs[mono_part(m.lang)] = {"src": str(m.path), "tgt": str(m.path), "src_sha256": digest, "tgt_sha256": digest}
    cfg_hash = prepared.config_hash(cfg)
    old = prepared.read_manifest(exp.data_dir)
    if not force and old is not None and prepared.up_to_date(old, cfg_hash, inputs):
        return PrepareResult(up_to_date=True, manifest=old, notes=notes)
    try:
        exp.root.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(exp.root / ".prepare.lock", what=f"nmt prepare of {exp.root}"):
            foreign = foreign_link(exp.data_dir, owned_dir=prepared.is_dataset_dir)
            if foreign is not None and not (replace_data_link and exp.data_dir.is_symlink()):
                raise foreign_link_error(exp.data_dir, foreign)  # before any work, not after it
            remove_unlinked(exp.data_dir)  # what a killed run left behind
            result = _prepare(cfg, exp, files, mono, inputs, cfg_hash, threads, replace_data_link)
            result.notes = notes
            return result
    except OSError as exc:  # the inputs were read before: this is the experiment dir (a full disk is caught below)
        raise DataError(
            f"{exc.filename or exp.root}: {exc.strerror or exc} while writing the prepared data of {exp.root}",
            hint="choose a workdir that is a directory you can write to (--set workdir=DIR)",
        ) from None


def _prepare(
    cfg: ExperimentConfig,
    exp: Experiment,
    files: list[SplitFiles],
    mono: list[MonoFile],
    inputs: dict[str, Any],
    cfg_hash: str,
    threads: int | None,
    replace_data_link: bool,
) -> PrepareResult:
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    replace = cfg.data.on_invalid_utf8 == "replace"
    line_counts, invalid_lines = _scan(files, replace=replace)
    mono_lines, mono_invalid = _scan_monolingual(mono, cfg, replace=replace)
    invalid_lines += mono_invalid
    timings["scan"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    vocab = _train_vocab(cfg, files, line_counts, replace=replace, mono=mono, mono_lines=mono_lines)
    timings["spm_train"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    data_dir = atomic_directory(
        exp.data_dir, behind_link=True, owned_dir=prepared.is_dataset_dir, replace_link=replace_data_link
    )
    try:
        with data_dir as staging:
            for direction in cfg.data.directions:
                (staging / direction).mkdir()
            summaries = [_encode_split(f, line_counts[f.name], vocab, cfg, staging, replace, threads) for f in files]
            for m in mono:
                summaries += _encode_monolingual(m, mono_lines[m.lang], vocab, cfg, staging, replace, threads)
            prepared.write_vocab(staging, vocab)
            manifest = prepared.write_manifest(
                staging,
                cfg_hash=cfg_hash,
                inputs=inputs,
                lines={**line_counts, **{mono_part(m.lang): mono_lines[m.lang] for m in mono}},
                vocab=vocab,
                splits=summaries,
                invalid_utf8_lines=invalid_lines,
                init_from=cfg.train.init_from,
            )
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise
        raise _disk_full_error(exc, exp) from None
    timings["encode"] = time.perf_counter() - t0
    exp.write_config(cfg)
    return PrepareResult(
        up_to_date=False, manifest=manifest, splits=summaries, invalid_utf8_lines=invalid_lines, timings=timings
    )


def _train_vocab(
    cfg: ExperimentConfig,
    files: list[SplitFiles],
    line_counts: dict[str, int],
    *,
    replace: bool,
    mono: list[MonoFile],
    mono_lines: dict[str, int],
) -> Vocab:
    """The vocabulary from the training text: of every source of the train split, or (multilingual) of
    every language, each read from the first direction's train split that holds it, with the train
    sources' tags as control symbols (after the language tokens); with `data.monolingual`, see
    `_pretraining_vocab`; with `train.init_from`, the checkpoint's (no SentencePiece training: the
    data are encoded as that model reads text)."""
    if cfg.train.init_from is not None:  # fine-tuning: the checkpoint's vocabulary, ids and all
        vocab = Vocab.from_checkpoint(read_checkpoint(cfg.train.init_from)["vocab"])
        missing = [t for t in cfg.data.tags if vocab.tag_id(t) is None]
        if missing:
            raise ConfigError(
                f"data.splits.train: tag {missing[0]} is not a token of {cfg.train.init_from}'s vocabulary",
                hint="a fine-tuned model keeps its vocabulary: drop the tag, or train from scratch with it",
            )
        return vocab
    text = lambda raw: to_text(raw, replace_invalid=replace)  # noqa: E731
    seed = cfg.vocab.sample_seed  # in the data hash, unlike train.seed: a changed sample is never "up to date"
    tags = [tag_piece(t) for t in cfg.data.tags]
    if mono:
        return _pretraining_vocab(cfg, files, line_counts, mono, mono_lines, text=text, control_symbols=tags)
    if not cfg.data.multilingual:  # every train source in the sample, back-translated text included
        train = [f for f in files if split_of(f.name) == "train"]
        return train_vocab(
            lambda: itertools.chain.from_iterable(raw_line_pairs(f) for f in train),
            sum(line_counts[f.name] for f in train),
            cfg.vocab,
            seed=seed,
            text=text,
            where=f"split 'train': {', '.join(f'{f.src} and {f.tgt}' for f in train)}",
            control_symbols=tags,
        )
    by_name = {f.name: f for f in files}
    sources: dict[str, Any] = {}
    for direction, pair in zip(cfg.data.directions, cfg.data.pairs, strict=True):
        part = by_name[direction_part(direction, "train")]
        for side, lang in enumerate(pair):
            if lang not in sources:
                sources[lang] = (lambda part=part: raw_line_pairs(part), line_counts[part.name], side)
    return train_multilingual_vocab(
        sources, cfg.vocab, temperature=cfg.data.sampling_temperature, seed=seed, text=text, control_symbols=tags
    )


def _pretraining_vocab(
    cfg: ExperimentConfig,
    files: list[SplitFiles],
    line_counts: dict[str, int],
    mono: list[MonoFile],
    mono_lines: dict[str, int],
    *,
    text: Any,
    control_symbols: list[str],
) -> Vocab:
    """The joint vocabulary of a config with `data.monolingual`: per language, its side of the parallel
    train text (every train source; multilingual: of each direction that has the language) followed
    by its monolingual text without the held-out lines, sampled per language by
    `data.sampling_temperature` (`language_quotas`) within `vocab.max_sentences`. Control symbols:
    the language tokens (multilingual, or more than one pretrained language: mBART's), the train
    sources' tags, then the mask token."""
    by_lang: dict[str, list[tuple[SplitFiles, int]]] = {lang: [] for lang in cfg.data.languages}
    pair_of = dict(zip(cfg.data.directions or [""], cfg.data.pairs, strict=True))
    for f in files:
        if split_of(f.name) != "train":
            continue
        src, tgt = pair_of[f.name.partition("/")[0] if cfg.data.multilingual else ""]
        by_lang[src].append((f, 0))
        by_lang[tgt].append((f, 1))
    mono_by_lang = {m.lang: m for m in mono}
    sources: dict[str, Any] = {}
    for lang, parts in by_lang.items():
        m = mono_by_lang.get(lang)
        n_mono = 0 if m is None else mono_lines[lang] - held_out(mono_lines[lang], cfg.pretrain.valid_lines)

        def lines(parts: list[tuple[SplitFiles, int]] = parts, m: MonoFile | None = m, n_mono: int = n_mono) -> Any:
            for f, side in parts:
                yield from ((pair[side], pair[side]) for pair in raw_line_pairs(f))
            if m is not None:
                yield from ((raw, raw) for raw in itertools.islice(read_raw_lines(m.path), n_mono))

        sources[lang] = (lines, sum(line_counts[f.name] for f, _ in parts) + n_mono, 0)
    return train_multilingual_vocab(
        sources,
        cfg.vocab,
        temperature=cfg.data.sampling_temperature,
        seed=cfg.vocab.sample_seed,
        text=text,
        control_symbols=[*control_symbols, mask_piece()],
        lang_tokens=cfg.data.multilingual or len(mono) > 1,
    )


def _scan_monolingual(mono: list[MonoFile], cfg: ExperimentConfig, *, replace: bool) -> tuple[dict[str, int], int]:
    """Line count of every monolingual file and the lines with invalid UTF-8; DataError for a file that is
    empty, too short to hold out validation lines, or (unless replacing) not UTF-8."""
    counts, invalid = {}, 0
    for m in mono:
        scan = scan_text(m.path)
        where = f"data.monolingual.{m.lang}: {m.path}"
        if scan.lines == 0:
            raise DataError(f"{where} is empty", hint="give each language a file with one sentence per line")
        if held_out(scan.lines, cfg.pretrain.valid_lines) == 0:
            raise DataError(
                f"{where} has {scan.lines} line(s): nmt pretrain holds out a tenth of it (at most "
                "pretrain.valid_lines) to validate on, so it needs at least 10",
                hint="give more monolingual text, or leave the language out of data.monolingual",
            )
        if scan.first_invalid is not None and not replace:
            raise DataError(
                f"data.monolingual.{m.lang}: {scan.first_invalid}",
                hint="re-encode the file as UTF-8, or set data.on_invalid_utf8: replace to replace and count them",
            )
        counts[m.lang], invalid = scan.lines, invalid + scan.invalid_lines
    return counts, invalid


def _scan(files: list[SplitFiles], *, replace: bool) -> tuple[dict[str, int], int]:
    """Line count of every split, and the number of lines with invalid UTF-8 (one pass per file)."""
    scans = {f.name: scan_split(f, replace_invalid=replace) for f in files}
    line_counts = {name: lines for name, (lines, _) in scans.items()}
    return line_counts, sum(bad for _, bad in scans.values())


def _disk_full_error(exc: OSError, exp: Experiment) -> DataError:
    """The DataError for a full disk (or quota) while writing the prepared data, saying what was kept."""
    where = f"{exc.filename}" if exc.filename else str(exp.root)
    kept = "the previous prepared data are untouched" if exp.data_dir.exists() else "nothing was kept"
    return DataError(
        f"{where}: {exc.strerror} while writing the prepared data of {exp.root}; {kept}",
        hint="free disk space (the prepared data need about 2 bytes per token), or set workdir on a larger disk",
    )


def _pack(ids: list[list[int]], dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """(flat ids, lengths) of a chunk's id lists."""
    lens = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=dtype, count=int(lens.sum()))
    return flat, lens


class _Lengths:
    """Sentence-length histogram: mean, p95 (numpy's linear interpolation) and max in constant memory."""

    def __init__(self) -> None:
        self.counts = np.zeros(1, dtype=np.int64)

    def add(self, lens: np.ndarray) -> None:
        hist = np.bincount(lens, minlength=len(self.counts))
        if len(hist) > len(self.counts):
            self.counts = np.pad(self.counts, (0, len(hist) - len(self.counts)))
        self.counts += hist

    def summary(self) -> tuple[int, float, float, int]:
        """(tokens, mean, p95, max); zeros when empty."""
        n = int(self.counts.sum())
        if n == 0:
            return 0, 0.0, 0.0, 0
        values = np.arange(len(self.counts))
        tokens = int((values * self.counts).sum())
        cum = np.cumsum(self.counts)
        rank = 0.95 * (n - 1)  # as np.percentile: between the sorted values at floor(rank) and ceil(rank)
        lo, hi = (int(np.searchsorted(cum, r, side="right")) for r in (int(np.floor(rank)), int(np.ceil(rank))))
        p95 = lo + (hi - lo) * (rank - np.floor(rank))
        return tokens, tokens / n, float(p95), int(values[self.counts > 0].max())


def _encode_split(
    files: SplitFiles,
    n_lines: int,
    vocab: Vocab,
    cfg: ExperimentConfig,
    out_dir: Path,
    replace: bool,
    threads: int | None,
) -> SplitSummary:
    train = split_of(files.name) == "train"
    writer = ShardWriter(
        out_dir,
        files.name,
        shard_size=cfg.data.shard_size,
        src_vocab_size=vocab.src_size,
        tgt_vocab_size=vocab.tgt_size,
    )
    src_dtype, tgt_dtype = token_dtype(vocab.src_size), token_dtype(vocab.tgt_size)
    clean, src_hist, tgt_hist = CleanStats(), _Lengths(), _Lengths()
    bar = progress(total=n_lines, desc=f"encode {files.name}", unit="pair")
    with contextlib.ExitStack() as stack:
        refs: IO[bytes] | None = None
        if not train:
            refs = stack.enter_context(open(prepared.references_path(out_dir, files.name), "wb"))  # noqa: SIM115
        for src_lines, tgt_lines in line_pair_chunks(files, replace_invalid=replace, size=ENCODE_CHUNK):
            src_flat, src_lens = _pack(vocab.encode_src(src_lines, threads=threads), src_dtype)
            tgt_flat, tgt_lens = _pack(vocab.encode_tgt(tgt_lines, threads=threads), tgt_dtype)
            if train:
                keep = keep_mask(
                    src_lens, tgt_lens, max_len=cfg.data.max_len, max_ratio=cfg.data.max_ratio, stats=clean
                )
                src_flat, tgt_flat = src_flat[np.repeat(keep, src_lens)], tgt_flat[np.repeat(keep, tgt_lens)]
                src_lens, tgt_lens = src_lens[keep], tgt_lens[keep]
            else:
                clean.kept += len(src_lens)
                assert refs is not None
                refs.write("".join(f"{t}\n" for t in tgt_lines).encode("utf-8"))
            writer.add((src_flat, src_lens), (tgt_flat, tgt_lens))
            src_hist.add(src_lens)
            tgt_hist.add(tgt_lens)
            bar.update(len(src_lines))
        if refs is not None:
            refs.flush()
            os.fsync(refs.fileno())
    bar.close()
    shards = writer.close()
    if train and clean.kept == 0:
        raise DataError(
            f"split {files.name!r}: every pair was dropped by cleaning ({clean.dropped})",
            hint="check data.max_len / data.max_ratio and that source and target files are the right ones",
        )
    return _split_summary(files.name, n_lines, clean, shards, writer.records, src_hist, tgt_hist)


def _encode_monolingual(
    m: MonoFile,
    n_lines: int,
    vocab: Vocab,
    cfg: ExperimentConfig,
    out_dir: Path,
    replace: bool,
    threads: int | None,
) -> list[SplitSummary]:
    """A language's monolingual text as two parts, `mono.<lang>` (training) and `mono.valid.<lang>` (its
    last `held_out` lines): source ids only (the target of a denoising example is its source, before
    the noise), empty lines and lines over `data.max_len` tokens dropped and counted in both."""
    n_valid = held_out(n_lines, cfg.pretrain.valid_lines)
    dtype = token_dtype(vocab.src_size)
    out = []
    lines = read_raw_lines(m.path)
    for name, count in ((mono_part(m.lang), n_lines - n_valid), (mono_part(m.lang, valid=True), n_valid)):
        writer = ShardWriter(
            out_dir, name, shard_size=cfg.data.shard_size, src_vocab_size=vocab.src_size, tgt_vocab_size=vocab.tgt_size
        )
        clean, hist = CleanStats(), _Lengths()
        bar = progress(total=count, desc=f"encode {name}", unit="line")
        taken = itertools.islice(lines, count)
        while chunk := [to_text(raw, replace_invalid=replace) for raw in itertools.islice(taken, ENCODE_CHUNK)]:
            flat, lens = _pack(vocab.encode_src(chunk, threads=threads), dtype)
            keep = keep_mask(lens, lens, max_len=cfg.data.max_len, max_ratio=math.inf, stats=clean)
            flat, lens = flat[np.repeat(keep, lens)], lens[keep]
            writer.add((flat, lens), (flat[:0], np.zeros_like(lens)))
            hist.add(lens)
            bar.update(len(chunk))
        bar.close()
        shards = writer.close()
        if clean.kept == 0:
            raise DataError(
                f"data.monolingual.{m.lang}: {m.path}: every line of {name} was dropped ({clean.dropped})",
                hint="check that the file holds text, and data.max_len",
            )
        out.append(_split_summary(name, count, clean, shards, writer.records, hist, _Lengths()))
    return out


def _split_summary(
    name: str,
    n_lines: int,
    clean: CleanStats,
    shards: int,
    shard_records: list[dict[str, int]],
    src_hist: _Lengths,
    tgt_hist: _Lengths,
) -> SplitSummary:
    """What `_encode_split` wrote: counts, dropped pairs, and token and length statistics per side."""
    src_tokens, src_mean, src_p95, src_max = src_hist.summary()
    tgt_tokens, tgt_mean, tgt_p95, tgt_max = tgt_hist.summary()
    return SplitSummary(
        name=name,
        lines=n_lines,
        kept=clean.kept,
        shards=shards,
        dropped=clean.dropped,
        src_tokens=src_tokens,
        tgt_tokens=tgt_tokens,
        src_len_mean=src_mean,
        src_len_p95=src_p95,
        tgt_len_mean=tgt_mean,
        tgt_len_p95=tgt_p95,
        max_src_len=src_max,
        max_tgt_len=tgt_max,
        shard_records=shard_records,
    )
