"""One model, three directions (number words: en-de, en-fr, de-en), through the CLI: every direction
reaches BLEU 90 on its test lines (scored by `nmt evaluate CONFIG`, a record per direction, the
gate naming the failing direction), a user's literal language token is text, and a pivot works."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nmt.config import load_config
from nmt.data.prepare import prepare
from nmt.demo import german
from nmt.train.loop import train
from tests.conftest import run_nmt
from tests.corpora import french, multilingual_config, number_lines

WORDS = {"de": german, "fr": french}

DIRECTIONS = ["en-de", "en-fr", "de-en"]
# the demo's recipe (configs/demo.yaml), scaled for three directions
RECIPE = """vocab:
  size: 160
model:
  preset: tiny
  d_model: 128
  n_heads: 4
  ffn_dim: 256
  dropout: 0.0
  max_len: 128
train:
  device: cpu
  precision: fp32
  compile: false
  batch_tokens: 3000
  lr: 5e-3
  schedule: cosine
  warmup_steps: 100
  max_steps: 300
  log_every: 50
  valid_every: 300
  valid_max_lines: 50
decode:
  beam: 4
"""


@pytest.mark.slow
def test_three_directions_reach_bleu_90_each_and_ask_for_their_language(tmp_path: Path) -> None:
    path = multilingual_config(tmp_path, DIRECTIONS, sizes=(4000, 100, 100), below=100)
    text = path.read_text()
    path.write_text(text[: text.index("vocab:")] + RECIPE)
    cfg = load_config(path)
    prepare(cfg)
    train(cfg)  # in this process: the CLI around it is what the rest of the test runs
    record = json.loads((tmp_path / "exp" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["event"] == "valid" and sorted(record["directions"]) == sorted(DIRECTIONS)

    done = run_nmt("evaluate", str(path), "--split", "test", "--json", "--fail-under", "90")
    assert done.returncode == 0, done.stderr[-3000:]
    systems = json.loads(done.stdout)["systems"]
    assert [s["direction"] for s in systems] == DIRECTIONS
    assert all(s["scores"]["bleu"] >= 90 for s in systems), [(s["direction"], s["scores"]["bleu"]) for s in systems]
    gate = run_nmt("evaluate", str(path), "--split", "test", "--direction", "en-fr", "--fail-under", "101")
    assert gate.returncode == 1 and "en-fr: BLEU" in gate.stderr and "Traceback" not in gate.stderr, gate.stderr

    ckpt = str(tmp_path / "exp" / "checkpoints" / "best.pt")
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
