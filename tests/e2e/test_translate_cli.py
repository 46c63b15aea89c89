"""`nmt translate` through the real CLI: self-contained checkpoints, line alignment, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import TinyCheckpoint, run_nmt

pytestmark = pytest.mark.slow  # an `nmt translate` subprocess per test: `make test-fast` skips them

FAST = ["--max-len-a", "0.5", "--max-len-b", "4"]


def test_works_from_another_directory_with_only_the_checkpoint(tiny_checkpoint: TinyCheckpoint, tmp_path: Path) -> None:
    alone = tmp_path / "elsewhere"
    alone.mkdir()
    # the stored config points at an experiment dir and corpus that do not exist here
    ckpt = torch.load(tiny_checkpoint.path, weights_only=True)
    ckpt["config"]["workdir"] = "/nonexistent/exp"
    ckpt["config"]["data"]["splits"] = {name: f"/nonexistent/{name}" for name in ("train", "valid")}
    torch.save(ckpt, alone / "model.pt")
    result = run_nmt("translate", "model.pt", *FAST, cwd=alone, input="alpha bravo\n\ncharlie delta echo\n")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 3
    assert result.stdout.splitlines()[1] == ""
    assert "Traceback" not in result.stderr


def test_odd_bytes_nbest_scores_and_files(tiny_checkpoint: TinyCheckpoint, tmp_path: Path) -> None:
    raw = [
        b"alpha bravo",
        b"",
        b"   ",
        b"\xff\xfe charlie",
        "d\u0301elta\u2028echo\x0b\x0c\x85".encode(),
        b" ".join([b"golf"] * 200),
        "日本".encode(),
    ]
    src = tmp_path / "in.txt"
    src.write_bytes(b"\n".join(raw))  # the last line has no newline and still counts
    out = tmp_path / "out" / "hyp.txt"
    result = run_nmt(
        "translate",
        str(tiny_checkpoint.path),
        "-i",
        str(src),
        "-o",
        str(out),
        "--nbest",
        "2",
        "--scores",
        "--beam",
        "2",
        *FAST,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    lines = out.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "" and len(lines[:-1]) == 2 * len(raw)
    for line in lines[:-1]:
        score, _, text = line.partition("\t")
        float(score)
    assert "1 input lines were longer" in " ".join(result.stderr.split())
    assert "1 input lines had invalid UTF-8" in " ".join(result.stderr.split())


def test_stdin_to_stdout_keeps_stdout_clean(tiny_checkpoint: TinyCheckpoint) -> None:
    result = run_nmt(
        "translate", str(tiny_checkpoint.path), "--beam", "1", *FAST, input=b"alpha\r\n\xc3\nbravo charlie"
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.split(b"\n")) == 4 and result.stdout.endswith(b"\n")
    result.stdout.decode("utf-8")  # valid UTF-8 out


@pytest.mark.parametrize(
    "content, expect",
    [
        (None, "checkpoint not found"),
        (b"", "not a readable nmt checkpoint"),
        (bytes(range(256)) * 20, "not a readable nmt checkpoint"),
        ("truncated", "not a readable nmt checkpoint"),
    ],
)
def test_missing_or_corrupt_checkpoint(
    tiny_checkpoint: TinyCheckpoint, tmp_path: Path, content: bytes | str | None, expect: str
) -> None:
    ckpt = tmp_path / "bad.pt"
    if content == "truncated":
        ckpt.write_bytes(tiny_checkpoint.path.read_bytes()[:5000])
    elif isinstance(content, bytes):
        ckpt.write_bytes(content)
    result = run_nmt("translate", str(ckpt), input="alpha\n")
    assert result.returncode == 2
    assert expect in " ".join(result.stderr.split()) and "bad.pt" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error(tiny_checkpoint: TinyCheckpoint) -> None:
    result = run_nmt("translate", str(tiny_checkpoint.path), "--device", "cuda", input="alpha\n")
    assert result.returncode == 2
    assert "CUDA is not available" in result.stderr and "Traceback" not in result.stderr


def test_bad_decode_settings_name_the_key(tiny_checkpoint: TinyCheckpoint) -> None:
    result = run_nmt("translate", str(tiny_checkpoint.path), "--set", "decode.bem=4", "--nbest", "9", input="")
    assert result.returncode == 2
    assert "did you mean decode.beam" in result.stderr and "Traceback" not in result.stderr


def test_glossary_through_the_cli_and_a_bad_glossary_file(tiny_checkpoint: TinyCheckpoint, tmp_path: Path) -> None:
    good, bad = tmp_path / "good.tsv", tmp_path / "bad.tsv"
    good.write_text("alpha\tBRAVO\n")
    bad.write_bytes(b"alpha\tBRAVO\ncharlie\n")
    result = run_nmt("translate", str(tiny_checkpoint.path), "--glossary", str(good), input="alpha\n\ncharlie alpha\n")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split("\n")
    assert len(lines) == 4 and lines[1] == "" and "BRAVO" in lines[0].split() and "BRAVO" in lines[2].split()
    assert "target terms: 2 in 2 lines" in " ".join(result.stderr.split())
    failed = run_nmt("translate", str(tiny_checkpoint.path), "--glossary", str(bad), input="alpha\n")
    assert failed.returncode != 0 and failed.stdout == ""
    assert "bad.tsv:2: expected 'source term<TAB>target term'" in failed.stderr and "Traceback" not in failed.stderr
    (tmp_path / "src.txt").write_text("alpha\ncharlie\n")
    (tmp_path / "ref.txt").write_text("BRAVO\nCHARLIE\n")
    scored = run_nmt(
        "evaluate", str(tiny_checkpoint.path), "--src", str(tmp_path / "src.txt"), "--ref", str(tmp_path / "ref.txt"),
        "--glossary", str(good), "--json", "--out", str(tmp_path / "hyp.txt"),
    )  # fmt: skip
    assert scored.returncode == 0, scored.stderr
    report = json.loads(scored.stdout)
    assert report["target_terms"] == {"lines": 1, "terms": 1, "lines_missing_a_term": 0}
    assert "BRAVO" in (tmp_path / "hyp.txt").read_text().splitlines()[0].split()
