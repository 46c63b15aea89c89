"""The embedded demo task: English number words -> German number words, generated here.

"three hundred twenty-one , forty-five" -> "dreihunderteinundzwanzig , fünfundvierzig".
German writes units before tens ("einundzwanzig") and fuses the number into one word, so
a model has to learn a real vocabulary, segmentation and local reordering, not a copy.
Lines hold several numbers so that BLEU's 4-grams exist. Deterministic for a seed; no
line occurs in two splits.

    python -m nmt.demo DEST   # writes DEST/{train,valid,test}.{en,de}
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

EN_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
EN_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
DE_ONES = [
    "null",
    "eins",
    "zwei",
    "drei",
    "vier",
    "fünf",
    "sechs",
    "sieben",
    "acht",
    "neun",
    "zehn",
    "elf",
    "zwölf",
    "dreizehn",
    "vierzehn",
    "fünfzehn",
    "sechzehn",
    "siebzehn",
    "achtzehn",
    "neunzehn",
]
DE_TENS = ["", "", "zwanzig", "dreißig", "vierzig", "fünfzig", "sechzig", "siebzig", "achtzig", "neunzig"]
SIZES = {"train": 12_000, "valid": 300, "test": 300}


def english(n: int) -> str:
    """English words for 1 <= n <= 999, e.g. 321 -> 'three hundred twenty-one'."""
    hundreds, rest = divmod(n, 100)
    words = [f"{EN_ONES[hundreds]} hundred"] if hundreds else []
    if rest >= 20:
        words.append(EN_TENS[rest // 10] + (f"-{EN_ONES[rest % 10]}" if rest % 10 else ""))
    elif rest:
        words.append(EN_ONES[rest])
    return " ".join(words)


def german(n: int) -> str:
    """German word for 1 <= n <= 999, e.g. 321 -> 'dreihunderteinundzwanzig'."""
    hundreds, rest = divmod(n, 100)
    word = ("ein" if hundreds == 1 else DE_ONES[hundreds]) + "hundert" if hundreds else ""
    if rest >= 20:
        unit = rest % 10
        word += (("ein" if unit == 1 else DE_ONES[unit]) + "und" if unit else "") + DE_TENS[rest // 10]
    elif rest:
        word += DE_ONES[rest]
    return word


def make_pairs(n_lines: int, rng: random.Random) -> list[tuple[str, str]]:
    pairs = []
    for _ in range(n_lines):
        # small numbers are frequent in real text and are the easiest to get wrong when rare
        numbers = [rng.randint(1, rng.choice((20, 99, 999, 999))) for _ in range(rng.randint(3, 5))]
        pairs.append((" , ".join(english(x) for x in numbers), " , ".join(german(x) for x in numbers)))
    return pairs


def generate(dest: str | Path, *, seed: int = 1) -> dict[str, int]:
    """Write the demo corpus to `dest`; returns lines per split."""
    rng = random.Random(seed)
    seen: set[str] = set()
    counts = {}
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for split, size in SIZES.items():
        pairs = []
        while len(pairs) < size:
            for src, tgt in make_pairs(size - len(pairs), rng):
                if src not in seen:
                    seen.add(src)
                    pairs.append((src, tgt))
        for side, lang in ((0, "en"), (1, "de")):
            (dest / f"{split}.{lang}").write_text("".join(p[side] + "\n" for p in pairs), encoding="utf-8")
        counts[split] = len(pairs)
    return counts


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "data/demo/corpus"
    from nmt.console import info

    info(f"demo corpus -> {out}: {generate(out)}")
