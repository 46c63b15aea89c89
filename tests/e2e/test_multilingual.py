"""One model, three directions (number words: en-de, en-fr, de-en), through the CLI: every direction
reaches BLEU 90 on its test lines (scored by `nmt evaluate CONFIG`, a record per direction, the
gate naming the failing direction), a user's literal language token is text, and a pivot works."""

from __future__ import annotations

import json

import pytest

from nmt.demo import german
from tests.conftest import MultilingualModel, run_nmt
from tests.corpora import french, number_lines

WORDS = {"de": german, "fr": french}


@pytest.mark.slow
def test_three_directions_reach_bleu_90_each_and_ask_for_their_language(multilingual_model: MultilingualModel) -> None:
    path, directions = multilingual_model.config, list(multilingual_model.directions)
    record = json.loads((path.parent / "exp" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["event"] == "valid" and sorted(record["directions"]) == sorted(directions)

    done = run_nmt("evaluate", str(path), "--split", "test", "--json", "--fail-under", "90")
    assert done.returncode == 0, done.stderr[-3000:]
    systems = json.loads(done.stdout)["systems"]
    assert [s["direction"] for s in systems] == directions
    assert all(s["scores"]["bleu"] >= 90 for s in systems), [(s["direction"], s["scores"]["bleu"]) for s in systems]
    gate = run_nmt("evaluate", str(path), "--split", "test", "--direction", "en-fr", "--fail-under", "101")
    assert gate.returncode == 1 and "en-fr: BLEU" in gate.stderr and "Traceback" not in gate.stderr, gate.stderr

    ckpt = str(multilingual_model.checkpoint)
    lines = number_lines(20, seed=9, below=100)
    # a literal language token in the input is text: it does not switch the output language
    tagged = [f">>fr<< {line}" for line in lines["en"]]
    out = run_nmt("translate", ckpt, "--tgt-lang", "de", input="".join(f"{x}\n" for x in tagged))
    assert out.returncode == 0, out.stderr
    outputs = out.stdout.splitlines()
    vocabulary = {lang: {w for n in range(100) for w in words(n).split()} | {","} for lang, words in WORDS.items()}
    assert len(outputs) == 20 and not any(">>" in x for x in outputs)
    assert all(set(x.split()) <= vocabulary["de"] for x in outputs), outputs  # German number words only
    assert not any(set(x.split()) & (vocabulary["fr"] - vocabulary["de"]) for x in outputs), outputs
    # de -> fr was never trained (tests/unit/test_multilingual.py: the zero-shot warning): through English
    src = "".join(f"{x}\n" for x in lines["de"])
    pivot = run_nmt("translate", ckpt, "--tgt-lang", "fr", "--src-lang", "de", "--pivot", "en", input=src)
    assert pivot.returncode == 0, pivot.stderr
    assert sum(p == f for p, f in zip(pivot.stdout.splitlines(), lines["fr"], strict=True)) >= 16
