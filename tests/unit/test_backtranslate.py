"""`nmt backtranslate`: one written pair per kept line, every dropped line counted under its reason. The
oracle for each line is `nmt translate` (the same flags) and the token counts of SentencePiece itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sentencepiece as spm
import torch

from nmt.decode.backtranslate import drop_reason
from tests.conftest import TinyCheckpoint


def test_pairs_written_and_drops_counted_against_translate(
    tiny_checkpoint: TinyCheckpoint, tmp_path: Path, nmt_cli: Any
) -> None:
    lines = (tiny_checkpoint.corpus / "test.src").read_text(encoding="utf-8").splitlines()[:30]
    lines[3] = ""  # an empty input line
    lines[7] = " ".join(lines[7:12])  # a long one
    source = tmp_path / "mono.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    flags = ["--beam", "1", "--set", "decode.max_len_b=12", "--set", "decode.max_len_a=0"]
    r = nmt_cli("backtranslate", str(tiny_checkpoint.path), "-i", str(source), "-o", str(tmp_path / "bt"),
                "--max-len", "20", "--max-ratio", "2.5", "--json", *flags)  # fmt: skip
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    t = nmt_cli("translate", str(tiny_checkpoint.path), "-i", str(source), *flags)
    assert t.returncode == 0, t.stderr
    translations = t.stdout.split("\n")[: len(lines)]
    ckpt = torch.load(tiny_checkpoint.path, weights_only=True)
    src_sp = spm.SentencePieceProcessor(model_proto=ckpt["vocab"]["src"])
    tgt_sp = spm.SentencePieceProcessor(model_proto=ckpt["vocab"]["tgt"])
    expected, dropped = [], dict.fromkeys(("empty", "too_long", "ratio"), 0)
    for line, out in zip(lines, translations, strict=True):
        n_in = len(src_sp.encode(line)) if line.strip() else 0
        n_out = len(tgt_sp.encode(out)) if out.strip() else 0
        reason = drop_reason(n_out, n_in, max_len=20, max_ratio=2.5)
        if reason is None:
            expected.append((out, line))
        else:
            dropped[reason] += 1
    assert dropped["empty"] >= 1 and dropped["too_long"] >= 1  # the two lines made to be dropped
    files = (tmp_path / "bt.tgt", tmp_path / "bt.src")
    written = list(zip(*(p.read_text(encoding="utf-8").splitlines() for p in files), strict=True))
    assert written == expected
    assert report["lines"] == len(lines) and report["written"] == len(expected) and report["dropped"] == dropped
    assert report["written"] + sum(report["dropped"].values()) == len(lines)


def test_drop_reasons() -> None:
    assert drop_reason(0, 5, max_len=10, max_ratio=2) == "empty"
    assert drop_reason(11, 10, max_len=10, max_ratio=2) == "too_long"
    assert drop_reason(3, 7, max_len=10, max_ratio=2) == "ratio"
    assert drop_reason(4, 8, max_len=10, max_ratio=2) is None
