"""Deterministic tiny parallel corpora for tests (the shipped demo's generator is nmt.demo)."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

# --set overrides for a model small enough that a training step takes milliseconds
FAST = [
    "model.d_model=32",
    "model.ffn_dim=64",
    "model.n_heads=2",
    "model.enc_layers=1",
    "model.dec_layers=1",
    "decode.beam=1",
    "train.batch_tokens=256",
    "train.compile=false",  # pinned: compiling takes longer than these runs (the compile tests ask for it)
]

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]


def reverse_pairs(n: int, *, seed: int, min_len: int = 3, max_len: int = 6) -> list[tuple[str, str]]:
    """Source: random words; target: the same words reversed and upper-cased."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(min_len, max_len))]
        pairs.append((" ".join(words), " ".join(w.upper() for w in reversed(words))))
    return pairs


def write_split(
    directory: Path, split: str, pairs: list[tuple[str, str]], *, gz: bool = False, src: str = "src", tgt: str = "tgt"
) -> Path:
    """Write `<dir>/<split>.<src>` and `.<tgt>` (optionally gzipped); return the prefix."""
    directory.mkdir(parents=True, exist_ok=True)
    for lang, side in ((src, 0), (tgt, 1)):
        text = "".join(p[side] + "\n" for p in pairs).encode()
        path = directory / f"{split}.{lang}{'.gz' if gz else ''}"
        path.write_bytes(gzip.compress(text) if gz else text)
    return directory / split


def toy_config(tmp: Path, *, train: int = 400, valid: int = 40, gz: bool = False, extra: str = "") -> Path:
    """A complete tiny experiment config over a reverse-words corpus in `tmp`."""
    data = tmp / "corpus"
    write_split(data, "train", reverse_pairs(train, seed=1), gz=gz)
    write_split(data, "valid", reverse_pairs(valid, seed=2), gz=gz)
    write_split(data, "test", reverse_pairs(valid, seed=3), gz=gz)
    cfg = tmp / "toy.yaml"
    cfg.write_text(f"""name: toy
workdir: {tmp / "exp"}
data:
  src_lang: src
  tgt_lang: tgt
  splits:
    train: {data / "train"}
    valid: {data / "valid"}
    test: {data / "test"}
vocab:
  size: 60
model:
  preset: tiny
train:
  device: cpu
  batch_tokens: 512
  lr: 3e-3
  warmup_steps: 50
  max_steps: 40
  log_every: 10
  valid_every: 20
{extra}""")
    return cfg


def toy_vocabs(pairs: list[tuple[str, str]]):
    """SentencePiece vocabularies of `pairs`, joint (True: 60 pieces) and separate (False: 40 per side)."""
    from nmt.config import VocabConfig
    from nmt.data.vocab import train_vocab

    return {
        joint: train_vocab(
            lambda: iter(pairs), len(pairs), VocabConfig(size=60 if joint else 40, joint=joint), seed=1, text=str.strip
        )
        for joint in (True, False)
    }
