"""SentencePiece vocabularies with fixed special ids.

Ids are fixed for every model nmt trains: pad=0, unk=1, bos=2 (`<s>`), eos=3 (`</s>`).
A joint vocabulary is one model used for both sides; separate vocabularies are one per side.
"""

from __future__ import annotations

import io
import itertools
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import sentencepiece as spm

from nmt.config import VocabConfig
from nmt.errors import ConfigError, DataError
from nmt.tokens import BOS_ID, EOS_ID, PAD_ID, UNK_ID, lang_piece, mask_piece, tag_piece


@dataclass
class Vocab:
    """Source and target SentencePiece processors (the same object when joint).

    The model's ids are SentencePiece's, except in an imported model (`nmt import`), whose ids
    are its own vocabulary's: `src_pieces`/`tgt_pieces` list the piece of every model id
    (nmt's four special ids first), SentencePiece splits the text into pieces and the table
    gives their ids (a piece it lacks is unk), as Hugging Face's MarianTokenizer does.
    """

    src_model: bytes
    tgt_model: bytes
    src_pieces: tuple[str, ...] | None = None  # model id -> piece, for an imported model; None: SentencePiece ids
    tgt_pieces: tuple[str, ...] | None = None

    @classmethod
    def from_checkpoint(cls, raw: dict[str, Any]) -> Vocab:
        """The vocabulary a checkpoint's "vocab" entry describes (`nmt.checkpoint`)."""
        src_pieces, tgt_pieces = raw.get("src_pieces"), raw.get("tgt_pieces")
        return cls(
            raw["src"],
            raw["tgt"],
            tuple(src_pieces) if src_pieces is not None else None,
            tuple(tgt_pieces) if tgt_pieces is not None else None,
        )

    def checkpoint_pieces(self) -> tuple[list[str], list[str]] | None:
        """What `from_checkpoint` needs back: the id tables of an imported model, else None."""
        if self.src_pieces is None or self.tgt_pieces is None:
            return None
        return list(self.src_pieces), list(self.tgt_pieces)

    def __post_init__(self) -> None:
        self.src = spm.SentencePieceProcessor(model_proto=self.src_model)
        self.tgt = (
            self.src if self.src_model == self.tgt_model else spm.SentencePieceProcessor(model_proto=self.tgt_model)
        )
        self._src_ids = None if self.src_pieces is None else {p: i for i, p in enumerate(self.src_pieces)}
        self._tgt_ids = None if self.tgt_pieces is None else {p: i for i, p in enumerate(self.tgt_pieces)}

    @property
    def joint(self) -> bool:
        """One vocabulary for both sides: the same SentencePiece model, or one id table over both."""
        if self.src_pieces is not None:
            return self.src_pieces == self.tgt_pieces
        return self.src_model == self.tgt_model

    @property
    def src_size(self) -> int:
        return len(self.src_pieces) if self.src_pieces is not None else self.src.get_piece_size()

    @property
    def tgt_size(self) -> int:
        return len(self.tgt_pieces) if self.tgt_pieces is not None else self.tgt.get_piece_size()

    def target_pieces(self) -> list[str]:
        """The piece of every target id, in id order."""
        if self.tgt_pieces is not None:
            return list(self.tgt_pieces)
        return [self.tgt.id_to_piece(i) for i in range(self.tgt.get_piece_size())]

    def encode_src(self, lines: list[str], *, threads: int | None = None) -> list[list[int]]:
        """Ids of each line; SentencePiece encodes the list on `threads` threads (default: all cores)."""
        return self._encode(self.src, self._src_ids, lines, threads)

    def encode_tgt(self, lines: list[str], *, threads: int | None = None) -> list[list[int]]:
        return self._encode(self.tgt, self._tgt_ids, lines, threads)

    @staticmethod
    def _encode(
        sp: spm.SentencePieceProcessor, table: dict[str, int] | None, lines: list[str], threads: int | None
    ) -> list[list[int]]:
        threads = threads or os.cpu_count() or 1
        if table is None:
            return sp.encode(lines, out_type=int, num_threads=threads)
        pieces = sp.encode(lines, out_type=str, num_threads=threads)
        return [[table.get(p, UNK_ID) for p in line] for line in pieces]

    def decode_tgt(self, ids: list[list[int]]) -> list[str]:
        return self._decode(self.tgt, self.tgt_pieces, ids)

    def decode_src(self, ids: list[list[int]]) -> list[str]:
        """Source ids back to text (as the source vocabulary normalised it)."""
        return self._decode(self.src, self.src_pieces, ids)

    @staticmethod
    def _decode(sp: spm.SentencePieceProcessor, table: tuple[str, ...] | None, ids: list[list[int]]) -> list[str]:
        if table is None:
            return sp.decode(ids)
        return [sp.decode_pieces([table[i] for i in line if i not in (PAD_ID, BOS_ID, EOS_ID)]) for line in ids]

    def tag_id(self, tag: str) -> int | None:
        """The source-side id of a training source's tag (`tag_piece`), None when the vocabulary has none."""
        if self._src_ids is not None:
            return self._src_ids.get(tag_piece(tag))
        i = self.src.piece_to_id(tag_piece(tag))
        return i if i > EOS_ID and self.src.is_control(i) else None

    @property
    def mask_id(self) -> int | None:
        """The id of the mask token (`mask_piece`), None when the vocabulary has none (prepared without
        data.monolingual, or an imported model's)."""
        if self._src_ids is not None:
            return self._src_ids.get(mask_piece())
        i = self.src.piece_to_id(mask_piece())
        return i if i > EOS_ID and self.src.is_control(i) else None

    def lang_id(self, lang: str) -> int | None:
        """The id of `lang`'s language token (`lang_piece`), None when the vocabulary has none (an imported
        model's: the id of its `>>xx<<` piece in the id table)."""
        if self._tgt_ids is not None:
            return self._tgt_ids.get(lang_piece(lang))
        i = self.tgt.piece_to_id(lang_piece(lang))
        return i if i > EOS_ID and self.tgt.is_control(i) else None

    @property
    def languages(self) -> list[str]:
        """The languages with a language token, in id order (empty for a bilingual vocabulary)."""
        out = []
        for i in range(EOS_ID + 1, self.tgt_size):
            piece = self.tgt.id_to_piece(i)
            if not (self.tgt.is_control(i) and piece.startswith(">>") and piece.endswith("<<")):
                break
            out.append(piece[2:-2])
        return out

    def src_piece_list(self, ids: list[int]) -> list[str]:
        """The pieces of source ids."""
        if self.src_pieces is not None:
            return [self.src_pieces[i] for i in ids]
        return [self.src.id_to_piece(i) for i in ids]

    def tgt_piece_list(self, ids: list[int]) -> list[str]:
        """The pieces of target ids."""
        if self.tgt_pieces is not None:
            return [self.tgt_pieces[i] for i in ids]
        return [self.tgt.id_to_piece(i) for i in ids]


_TOO_LOW = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)")
_TOO_HIGH = re.compile(r"Vocabulary size (?:is )?too high \((\d+)\)\. Please set it to a value <= (\d+)")


T = TypeVar("T")


def sample_sentences(
    pairs: Iterable[tuple[T, T]],
    n_pairs: int,
    *,
    sides: tuple[int, ...],
    max_sentences: int,
    seed: int,
    text: Callable[[T], str],
) -> Iterator[str]:
    """The sentences SentencePiece trains on, streamed: `sides` (0 source, 1 target) of the pairs
    whose two sides are non-empty, all source sentences first, then all target ones.

    Positions run over the virtual list [side 0 of every pair..., side 1 of every pair...]
    (len(sides) x n_pairs). When it is longer than `max_sentences`, that many positions are
    drawn without replacement by numpy's generator seeded with `seed` (a draw of numbers, no
    text), and only those lines are decoded; empty pairs among them are skipped. The corpus
    is read once and never held: the target sentences drawn wait in a list (at most
    `max_sentences`, which SentencePiece holds anyway).
    """
    total = len(sides) * n_pairs
    picks: list[list[int] | None] = [None] * len(sides)  # per side: line numbers drawn, ascending
    if total > max_sentences:
        chosen = np.sort(np.random.default_rng(seed).choice(total, size=max_sentences, replace=False))
        picks = [
            (chosen[(chosen >= k * n_pairs) & (chosen < (k + 1) * n_pairs)] - k * n_pairs).tolist()
            for k in range(len(sides))
        ]
    next_pick = [0] * len(sides)
    later: list[str] = []
    for i, pair in enumerate(pairs):
        wanted = []
        for k, lines in enumerate(picks):
            if lines is None:
                wanted.append(k)
            elif next_pick[k] < len(lines) and lines[next_pick[k]] == i:
                next_pick[k] += 1
                wanted.append(k)
        if not wanted:
            continue
        src, tgt = text(pair[0]), text(pair[1])
        if not src or not tgt:
            continue
        for k in wanted:
            sentence = src if sides[k] == 0 else tgt
            if k == 0:
                yield sentence
            else:
                later.append(sentence)
    yield from later


def train_spm(sentences: Iterable[str], cfg: VocabConfig, *, what: str, control_symbols: Sequence[str] = ()) -> bytes:
    """Train one SentencePiece model on `sentences` (already sampled to `cfg.max_sentences`);
    `control_symbols` get the ids right after the special ones, in order (language tokens)."""
    writer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=writer,
            vocab_size=cfg.size,
            model_type=cfg.type,
            character_coverage=cfg.character_coverage,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            input_sentence_size=cfg.max_sentences,
            shuffle_input_sentence=True,
            num_threads=os.cpu_count() or 1,  # recorded in the model: not a per-call setting
            minloglevel=2,
            max_sentence_length=1 << 16,
            # only when on: an explicit False is recorded in the model and changes its bytes
            **({"byte_fallback": True} if cfg.byte_fallback else {}),
            **({"control_symbols": list(control_symbols)} if control_symbols else {}),
        )
    except RuntimeError as exc:
        match = _TOO_HIGH.search(str(exc))
        if match:
            raise ConfigError(
                f"vocab.size {cfg.size} is larger than SentencePiece can learn from the {what} text "
                f"(at most {match.group(2)} pieces)",
                hint=f"set vocab.size to {match.group(2)} or less (e.g. --set vocab.size={match.group(2)})",
            ) from None
        match = _TOO_LOW.search(str(exc))
        if match and cfg.byte_fallback:
            raise ConfigError(
                f"vocab.size {cfg.size} is too small for vocab.byte_fallback: the 256 byte pieces, the special "
                f"pieces and the {what} text's characters need {match.group(2)}",
                hint=f"raise vocab.size to more than {match.group(2)}, or turn vocab.byte_fallback off",
            ) from None
        raise ConfigError(f"SentencePiece training failed on the {what} text: {exc}") from None
    return writer.getvalue()


def train_vocab(
    pairs: Callable[[], Iterable[tuple[T, T]]],
    n_pairs: int,
    cfg: VocabConfig,
    *,
    seed: int,
    text: Callable[[T], str],
    where: str = "the training text",
    control_symbols: Sequence[str] = (),
) -> Vocab:
    """A joint or per-side vocabulary from the training pairs (`pairs()` starts a fresh pass over
    them, `text` turns one side of a pair into a stripped line), with `control_symbols` (the train
    sources' tags) at ids 4..; DataError when no pair has two non-empty sides among those drawn."""

    def train(sides: tuple[int, ...], seed: int, what: str) -> bytes:
        sentences = sample_sentences(
            pairs(), n_pairs, sides=sides, max_sentences=cfg.max_sentences, seed=seed, text=text
        )
        first = next(sentences, None)
        if first is None:
            raise DataError(
                f"{where} contain no non-empty pairs"
                + (f" among the {cfg.max_sentences:,} lines drawn" if len(sides) * n_pairs > cfg.max_sentences else "")
            )
        return train_spm(itertools.chain([first], sentences), cfg, what=what, control_symbols=control_symbols)

    if cfg.joint:
        model = train((0, 1), seed, "joint source+target")
        return Vocab(model, model)
    return Vocab(train((0,), seed, "source"), train((1,), seed + 1, "target"))


def language_quotas(sizes: dict[str, int], *, budget: int, temperature: float) -> dict[str, int]:
    """Sentences to draw per language for a multilingual vocabulary: p(lang) ~ n ** (1 / temperature)
    of `budget` = min(max_sentences, all sentences), each at most its language's n.

    temperature 1 is proportional to size; higher flattens towards equal shares, so that a small
    language is not starved of pieces (the same temperature samples the training directions).
    """
    total = sum(sizes.values())
    budget = min(budget, total)
    weights = {lang: n ** (1.0 / temperature) if n else 0.0 for lang, n in sizes.items()}
    norm = sum(weights.values()) or 1.0
    return {lang: min(n, round(budget * weights[lang] / norm)) for lang, n in sizes.items()}


def train_multilingual_vocab(
    sources: dict[str, tuple[Callable[[], Iterable[tuple[T, T]]], int, int]],
    cfg: VocabConfig,
    *,
    temperature: float,
    seed: int,
    text: Callable[[T], str],
    control_symbols: Sequence[str] = (),
    lang_tokens: bool = True,
) -> Vocab:
    """One joint vocabulary over several languages, with their language tokens (`lang_piece`; none
    when not `lang_tokens`), then `control_symbols` (the train sources' tags, the mask token).

    `sources[lang]` = (fresh pass over a training split's pairs, its pair count, the side (0/1)
    that is in `lang`). Each language contributes `language_quotas` sentences, drawn by
    position with its own seed (seed + its index in sorted order); its language token is a
    control symbol at id 4 + that index.
    """
    langs = sorted(sources)
    quotas = language_quotas(
        {lang: sources[lang][1] for lang in langs}, budget=cfg.max_sentences, temperature=temperature
    )

    def sentences() -> Iterator[str]:
        for k, lang in enumerate(langs):
            pairs, n_pairs, side = sources[lang]
            yield from sample_sentences(
                pairs(), n_pairs, sides=(side,), max_sentences=max(quotas[lang], 1), seed=seed + k, text=text
            )

    stream = sentences()
    first = next(stream, None)
    if first is None:
        raise DataError("the training text (train splits, data.monolingual) contains no non-empty lines")
    model = train_spm(
        itertools.chain([first], stream),
        cfg,
        what="multilingual",
        control_symbols=[*(lang_piece(x) for x in langs if lang_tokens), *control_symbols],
    )
    return Vocab(model, model)
