"""`nmt evaluate` through the real CLI: scores equal the sacrebleu CLI's, CI gating, JSON, errors."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TinyCheckpoint, run_nmt
from tests.corpora import reverse_pairs

SACREBLEU = Path(sys.executable).parent / "sacrebleu"


@pytest.fixture(scope="module")
def scored_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A noisy hypothesis file and two reference files (30 lines each)."""
    tmp = tmp_path_factory.mktemp("scored")
    rng = random.Random(7)
    refs = [t for _, t in reverse_pairs(30, seed=11)]
    hyps = [" ".join(w for w in r.split() if rng.random() > 0.25) + ("." if rng.random() > 0.5 else "") for r in refs]
    refs2 = [r.lower() + " !" for r in refs]
    paths = tmp / "hyp.txt", tmp / "ref1.txt", tmp / "ref2.txt"
    for path, lines in zip(paths, (hyps, refs, refs2)):
        path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return paths


def _sacrebleu(*args: str) -> list[dict]:
    out = subprocess.run([str(SACREBLEU), *args, "-w", "4"], capture_output=True, text=True, check=True).stdout
    parsed = json.loads(out)
    return parsed if isinstance(parsed, list) else [parsed]


@pytest.mark.parametrize("n_refs", [1, 2])
def test_scores_equal_the_sacrebleu_cli(scored_files: tuple[Path, Path, Path], n_refs: int) -> None:
    hyp, *refs = scored_files
    refs = refs[:n_refs]
    result = run_nmt("evaluate", "--hyp", str(hyp), *[a for r in refs for a in ("--ref", str(r))], "--json")
    assert result.returncode == 0, result.stderr
    ours = json.loads(result.stdout)
    theirs = _sacrebleu(*map(str, refs), "-i", str(hyp), "-m", "bleu", "chrf", "ter")
    theirs += _sacrebleu(*map(str, refs), "-i", str(hyp), "-m", "chrf", "--chrf-word-order", "2")
    for key, ref in zip(("bleu", "chrf", "ter", "chrf++"), theirs):
        assert ours["scores"][key] == pytest.approx(ref["score"], abs=1e-4), key
        assert ours["signatures"][key] == ref["signature"], key
    assert 0 < ours["scores"]["bleu"] < 100  # a score that actually tests something
    assert ours["passed"] is None and ours["threshold"] is None


def test_fail_under_gates_ci(scored_files: tuple[Path, Path, Path]) -> None:
    hyp, ref, _ = scored_files
    base = ["evaluate", "--hyp", str(hyp), "--ref", str(ref)]
    score = json.loads(run_nmt(*base, "--json").stdout)["scores"]["bleu"]
    below = run_nmt(*base, "--fail-under", f"{score + 1:.2f}", "--json")
    assert below.returncode == 1
    assert json.loads(below.stdout)["passed"] is False  # still one valid JSON document
    message = [line for line in below.stderr.splitlines() if "fail-under" in line]
    assert len(message) == 1 and f"{score:.2f}" in message[0]
    above = run_nmt(*base, "--fail-under", f"{score - 1:.2f}")
    assert above.returncode == 0, above.stderr
    assert "BLEU" in above.stderr and "nrefs:1" in above.stderr  # the table, on stderr


def test_line_count_mismatch_names_both_files_and_counts(scored_files: tuple[Path, Path, Path], tmp_path: Path) -> None:
    hyp, ref, _ = scored_files
    short = tmp_path / "short.txt"
    short.write_text("one\ntwo\n")
    result = run_nmt("evaluate", "--hyp", str(short), "--ref", str(ref))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    flat = " ".join(result.stderr.split())
    assert str(short) in flat and str(ref) in flat and " 2 lines" in flat and " 30" in flat


def test_checkpoint_mode_writes_hypotheses_and_scores_them(tiny_checkpoint: TinyCheckpoint, tmp_path: Path) -> None:
    src, ref = tiny_checkpoint.corpus / "test.src", tiny_checkpoint.corpus / "test.tgt"
    out = tmp_path / "hyps.txt"
    result = run_nmt(
        "evaluate",
        str(tiny_checkpoint.path),
        "--src",
        str(src),
        "--ref",
        str(ref),
        "--out",
        str(out),
        "--beam",
        "2",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["hyp"] == str(out) and len(out.read_text().splitlines()) == 40
    assert record["decode"]["beam"] == 2 and record["checkpoint"] == str(tiny_checkpoint.path)
    assert set(record["scores"]) == {"bleu", "chrf", "chrf++", "ter"} and record["elapsed_s"] > 0
    rescored = json.loads(run_nmt("evaluate", "--hyp", str(out), "--ref", str(ref), "--json").stdout)
    assert rescored["scores"] == record["scores"]


def test_config_mode_uses_best_checkpoint_and_split(tiny_checkpoint: TinyCheckpoint) -> None:
    result = run_nmt("evaluate", str(tiny_checkpoint.config), "--split", "test", "--max-len-b", "4", "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    hyp = tiny_checkpoint.path.with_name("best.test.hyp")
    assert record["hyp"] == str(hyp) and record["split"] == "test" and hyp.is_file()
    assert record["refs"] == [str(tiny_checkpoint.corpus / "test.tgt")]
    missing = run_nmt("evaluate", str(tiny_checkpoint.config), "--split", "test", "--checkpoint", "averaged")
    assert missing.returncode == 2 and "averaged.pt" in missing.stderr and "Traceback" not in missing.stderr


def test_evaluate_errors_are_clear(tiny_checkpoint: TinyCheckpoint, tmp_path: Path) -> None:
    src = tiny_checkpoint.corpus / "test.src"
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage" * 100)
    result = run_nmt("evaluate", str(corrupt), "--src", str(src), "--ref", str(src))
    assert result.returncode == 2 and "corrupt.pt" in result.stderr and "Traceback" not in result.stderr
    mismatch = run_nmt(
        "evaluate", str(tiny_checkpoint.path), "--src", str(src), "--ref", str(tiny_checkpoint.corpus / "train.tgt")
    )
    assert mismatch.returncode == 2 and "40 lines" in mismatch.stderr and "400" in mismatch.stderr


def test_target_language_picks_the_tokenizer_like_sacrebleu_l(tmp_path: Path) -> None:
    refs = ["我们今天去公园散步。", "这只猫很可爱。"]
    hyps = ["我们今天去公园。", "这只狗很可爱。"]
    hyp, ref = tmp_path / "hyp.zh", tmp_path / "ref.zh"
    hyp.write_text("".join(f"{h}\n" for h in hyps), encoding="utf-8")
    ref.write_text("".join(f"{r}\n" for r in refs), encoding="utf-8")
    done = run_nmt("evaluate", "--hyp", str(hyp), "--ref", str(ref), "--tgt-lang", "zh", "--json")
    assert done.returncode == 0, done.stderr
    ours = json.loads(done.stdout)
    [theirs] = _sacrebleu(str(ref), "-i", str(hyp), "-m", "bleu", "-l", "en-zh")
    assert ours["scores"]["bleu"] == pytest.approx(theirs["score"], abs=1e-4)
    assert "tok:zh" in ours["signatures"]["bleu"] and ours["tgt_lang"] == "zh"
