"""SentencePiece vocabularies with fixed special ids.

Ids are fixed for every model nmt trains: pad=0, unk=1, bos=2 (`<s>`), eos=3 (`</s>`).
A joint vocabulary is one model used for both sides; separate vocabularies are one per side.
"""

from __future__ import annotations

import io
import os
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass

import sentencepiece as spm

from nmt.config import VocabConfig
from nmt.errors import ConfigError
from nmt.tokens import BOS_ID, EOS_ID, PAD_ID, UNK_ID


@dataclass
class Vocab:
    """Source and target SentencePiece processors (the same object when joint)."""

    src_model: bytes
    tgt_model: bytes

    def __post_init__(self) -> None:
        self.src = spm.SentencePieceProcessor(model_proto=self.src_model)
        self.tgt = self.src if self.joint else spm.SentencePieceProcessor(model_proto=self.tgt_model)

    @property
    def joint(self) -> bool:
        return self.src_model == self.tgt_model

    @property
    def src_size(self) -> int:
        return self.src.get_piece_size()

    @property
    def tgt_size(self) -> int:
        return self.tgt.get_piece_size()

    def encode_src(self, lines: list[str]) -> list[list[int]]:
        return self.src.encode(lines, out_type=int, num_threads=os.cpu_count() or 1)

    def encode_tgt(self, lines: list[str]) -> list[list[int]]:
        return self.tgt.encode(lines, out_type=int, num_threads=os.cpu_count() or 1)

    def decode_tgt(self, ids: list[list[int]]) -> list[str]:
        return self.tgt.decode(ids)

    def src_pieces(self, ids: list[int]) -> list[str]:
        return [self.src.id_to_piece(i) for i in ids]

    def tgt_pieces(self, ids: list[int]) -> list[str]:
        return [self.tgt.id_to_piece(i) for i in ids]


_TOO_LOW = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)")
_TOO_HIGH = re.compile(r"Vocabulary size (?:is )?too high \((\d+)\)\. Please set it to a value <= (\d+)")


def train_spm(sentences: list[str], cfg: VocabConfig, *, seed: int, what: str) -> bytes:
    """Train one SentencePiece model on `sentences` (sampled to `cfg.max_sentences`)."""
    if len(sentences) > cfg.max_sentences:
        sentences = random.Random(seed).sample(sentences, cfg.max_sentences)
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
            num_threads=os.cpu_count() or 1,
            minloglevel=2,
            max_sentence_length=1 << 16,
        )
    except RuntimeError as exc:
        match = _TOO_HIGH.search(str(exc))
        if match:
            raise ConfigError(
                f"vocab.size {cfg.size} is larger than SentencePiece can learn from the {what} text "
                f"(at most {match.group(2)} pieces)",
                hint=f"set vocab.size to {match.group(2)} or less (e.g. --set vocab.size={match.group(2)})",
            ) from None
        raise ConfigError(f"SentencePiece training failed on the {what} text: {exc}") from None
    return writer.getvalue()


def train_vocab(src_lines: Iterable[str], tgt_lines: Iterable[str], cfg: VocabConfig, *, seed: int) -> Vocab:
    """Train a joint or per-side vocabulary on the training text."""
    src_list, tgt_list = list(src_lines), list(tgt_lines)
    if cfg.joint:
        model = train_spm(src_list + tgt_list, cfg, seed=seed, what="joint source+target")
        return Vocab(model, model)
    return Vocab(
        train_spm(src_list, cfg, seed=seed, what="source"), train_spm(tgt_list, cfg, seed=seed + 1, what="target")
    )
