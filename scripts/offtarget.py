"""Off-target output: the share of translations that are not in the language asked for.

    pip install 'nmt[langid]'     # lingua-language-detector: its models ship in the wheel, no download
    python scripts/offtarget.py hyp.de-en:en hyp.en-fr:fr ... [--among de en fr cs] [--json]

Each FILE:LANG is a file of translations (one a line) that should be in LANG. Every non-empty
line is identified by lingua (high-accuracy mode) among the `--among` languages (default: the
LANGs given), the languages the model writes: an output in another of them is off-target. A line
lingua cannot decide (digits, punctuation) counts as undecided, not off-target. Run it on the
references too (REF:LANG): the identifier's own error on correct text is the floor under the
figures, since short captions are sometimes misread.

Prints a table (file, language, lines, off-target, share, undecided, the languages found), or one
JSON document with --json.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path


def identify(lines: list[str], among: list[str]) -> list[str | None]:
    """The ISO 639-1 code lingua gives each line (among `among`), None when it cannot tell."""
    from lingua import IsoCode639_1, LanguageDetectorBuilder

    detector = LanguageDetectorBuilder.from_iso_codes_639_1(*(IsoCode639_1.from_str(c) for c in among)).build()
    found = detector.detect_languages_in_parallel_of(lines)
    return [lang.iso_code_639_1.name.lower() if lang is not None else None for lang in found]


def measure(path: Path, lang: str, among: list[str]) -> dict[str, object]:
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    text = [line for line in lines if line]
    found = identify(text, among)
    counts = collections.Counter(code or "undecided" for code in found)
    off = sum(n for code, n in counts.items() if code not in (lang, "undecided"))
    return {
        "file": str(path),
        "lang": lang,
        "lines": len(lines),
        "empty": len(lines) - len(text),
        "off_target": off,
        "off_target_share": off / len(text) if text else 0.0,
        "undecided": counts.get("undecided", 0),
        "found": dict(counts.most_common()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", metavar="FILE:LANG")
    parser.add_argument("--among", nargs="+", help="the languages to choose from (default: the LANGs given)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    pairs = []
    for item in args.files:
        path, sep, lang = item.rpartition(":")
        if not sep or not path or not lang:
            parser.error(f"{item}: write FILE:LANG")
        pairs.append((Path(path), lang))
    among = args.among or sorted({lang for _, lang in pairs})
    try:
        results = [measure(path, lang, among) for path, lang in pairs]
    except ImportError:
        sys.exit("scripts/offtarget.py needs lingua: pip install 'nmt[langid]'")
    except OSError as exc:
        sys.exit(f"scripts/offtarget.py: {exc}")
    if args.json:
        print(json.dumps({"among": among, "results": results}, indent=2))
        return
    print(f"{'file':50} {'lang':4} {'lines':>6} {'off':>5} {'share':>7} {'undec':>5}  found")
    for r in results:
        print(
            f"{str(r['file'])[-50:]:50} {r['lang']:4} {r['lines']:>6} {r['off_target']:>5} "
            f"{100 * float(r['off_target_share']):>6.2f}% {r['undecided']:>5}  {r['found']}"
        )


if __name__ == "__main__":
    main()
