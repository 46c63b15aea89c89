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

# the toy experiments' vocabulary, model and training sections
TOY_SETTINGS = """vocab:
  size: {vocab_size}
model:
  preset: tiny
train:
  device: cpu
  batch_tokens: 512
  lr: 3e-3
  warmup_steps: 50
  max_steps: 40
  log_every: 10
  valid_every: 20"""

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
{TOY_SETTINGS.format(vocab_size=60)}
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


FR_ONES = (
    "zéro un deux trois quatre cinq six sept huit neuf dix onze douze treize quatorze quinze seize "
    "dix-sept dix-huit dix-neuf"
).split()
FR_TENS = ["", "", "vingt", "trente", "quarante", "cinquante", "soixante"]


def french(n: int) -> str:
    """A number below 1,000 in French words (1990 spelling rules aside: hyphens as traditionally)."""
    if n < 20:
        return FR_ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        if tens in (7, 9):  # soixante-dix, quatre-vingt-dix: 60 / 80 + 10..19
            base, rest = ("soixante", n - 60) if tens == 7 else ("quatre-vingt", n - 80)
            return f"{base} et onze" if n == 71 else f"{base}-{FR_ONES[rest]}"
        base = "quatre-vingt" if tens == 8 else FR_TENS[tens]
        if ones == 0:
            return "quatre-vingts" if tens == 8 else base
        return f"{base} et un" if ones == 1 and tens != 8 else f"{base}-{FR_ONES[ones]}"
    hundreds, rest = divmod(n, 100)
    head = "cent" if hundreds == 1 else f"{FR_ONES[hundreds]} cent" + ("s" if rest == 0 else "")
    return head if rest == 0 else f"{head} {french(rest)}"


def number_lines(
    n: int, *, seed: int, langs: tuple[str, ...] = ("en", "de", "fr"), below: int = 1000
) -> dict[str, list[str]]:
    """`n` multi-way parallel lines of 1-3 numbers below `below` in words ("three hundred twenty-one , seven"),
    in English, German (nmt.demo's words) and French, keyed by language."""
    from nmt.demo import english, german

    words = {"en": english, "de": german, "fr": french}
    rng = random.Random(seed)
    out: dict[str, list[str]] = {lang: [] for lang in langs}
    for _ in range(n):
        numbers = [rng.randrange(below) for _ in range(rng.randint(1, 3))]
        for lang in langs:
            out[lang].append(" , ".join(words[lang](x) for x in numbers))
    return out


def multilingual_config(
    tmp: Path, directions: list[str], *, sizes: tuple[int, int, int] = (400, 40, 40), extra: str = "", below: int = 1000
) -> Path:
    """A complete tiny multilingual experiment config over the number-words corpus (en, de, fr) in `tmp`."""
    data = tmp / "corpus"
    data.mkdir(parents=True, exist_ok=True)
    for split, n, seed in zip(("train", "valid", "test"), sizes, (1, 2, 3), strict=True):
        for lang, lines in number_lines(n, seed=seed, below=below).items():
            (data / f"{split}.{lang}").write_text("".join(f"{x}\n" for x in lines), encoding="utf-8")
    cfg = tmp / "multi.yaml"
    cfg.write_text(f"""name: multi
workdir: {tmp / "exp"}
data:
  directions: [{", ".join(directions)}]
  splits:
    train: {data / "train"}
    valid: {data / "valid"}
    test: {data / "test"}
{TOY_SETTINGS.format(vocab_size=120)}
{extra}""")
    return cfg
