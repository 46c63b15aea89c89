"""The shipped demo pipeline, end to end through the CLI, must reach its BLEU bar."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nmt.demo import SIZES, english, generate, german
from tests.conftest import ROOT, THREADS, run_nmt


def test_number_words() -> None:
    assert [english(n) for n in (7, 21, 100, 321, 999)] == [
        "seven",
        "twenty-one",
        "one hundred",
        "three hundred twenty-one",
        "nine hundred ninety-nine",
    ]
    assert [german(n) for n in (7, 21, 100, 101, 321, 999)] == [
        "sieben",
        "einundzwanzig",
        "einhundert",
        "einhunderteins",
        "dreihunderteinundzwanzig",
        "neunhundertneunundneunzig",
    ]


def test_generator_is_deterministic_with_disjoint_splits(tmp_path: Path) -> None:
    assert generate(tmp_path / "a") == SIZES
    generate(tmp_path / "b")
    lines = {}
    for split in SIZES:
        text = (tmp_path / "a" / f"{split}.en").read_text()
        assert text == (tmp_path / "b" / f"{split}.en").read_text()
        lines[split] = set(text.splitlines())
    assert not (lines["train"] & lines["test"]) and not (lines["train"] & lines["valid"])


@pytest.mark.slow
def test_demo_pipeline_reaches_bleu_90(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    generate(corpus)
    sets = [f"workdir={tmp_path / 'exp'}"] + [f"data.splits.{s}={corpus / s}" for s in SIZES]
    args = [a for s in sets for a in ("--set", s)]
    env = {"OMP_NUM_THREADS": THREADS}
    config = str(ROOT / "configs" / "demo.yaml")
    for command in ("prepare", "train"):
        result = run_nmt(command, config, *args, env=env, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
    result = run_nmt("evaluate", config, "--split", "test", "--json", "--fail-under", "90", *args, env=env)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    record = json.loads(result.stdout)
    assert record["scores"]["bleu"] >= 90
    translated = run_nmt(
        "translate",
        str(tmp_path / "exp" / "checkpoints" / "best.pt"),
        env=env,
        input="three hundred twenty-one , forty-five , seven\n",
    )
    assert translated.stdout == " , ".join(german(n) for n in (321, 45, 7)) + "\n"
