"""`nmt translate --confidence`: the teacher-forced token log-probs against the search's own scores and
one-sentence passes, the column, and a CTranslate2 export's against the checkpoint's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nmt.decode.scoring import confidence, token_logprobs
from nmt.decode.translate import load_for_decoding, source_ids, translate, translate_lines
from nmt.tokens import BOS_ID, EOS_ID, PAD_ID
from tests.conftest import TinyCheckpoint

CPU = torch.device("cpu")


def test_token_logprobs_are_the_searchs_and_a_one_sentence_pass(tiny_checkpoint: TinyCheckpoint) -> None:
    lines = (tiny_checkpoint.corpus / "test.src").read_text().splitlines()[:16]
    loaded, cfg, _ = load_for_decoding(
        tiny_checkpoint.path, overrides=["decode.precision=fp32", "decode.length_penalty=average", "decode.alpha=1.0"]
    )
    translations = [t[0] for t in translate_lines(loaded, lines, cfg, device=CPU)]
    src, _ = source_ids(loaded, lines)
    found = token_logprobs(loaded.model, src, [list(t.ids) for t in translations], device=CPU)
    for s, t, lp in zip(src, translations, found, strict=True):
        assert len(lp) == len(t.ids) + 1  # every token and </s>
        # the beam's score with the average penalty and alpha 1 is the mean log-prob of tokens and </s>
        assert float(lp.mean()) == pytest.approx(t.score, abs=1e-4)
        with torch.inference_mode():
            logits = loaded.model(torch.tensor([s]), torch.tensor([s]) == PAD_ID, torch.tensor([[BOS_ID, *t.ids]]))
        gold = torch.tensor([*t.ids, EOS_ID])
        want = logits[0].float().log_softmax(-1).gather(-1, gold[:, None])[:, 0].numpy()
        np.testing.assert_allclose(lp, want, atol=1e-5)
        assert confidence(lp) == pytest.approx(float(np.exp(want).mean()), abs=1e-6)


def test_the_confidence_column_goes_after_the_score_and_before_the_links(
    tiny_checkpoint: TinyCheckpoint, tmp_path: Path
) -> None:
    lines = [*(tiny_checkpoint.corpus / "test.src").read_text().splitlines()[:5], ""]
    (tmp_path / "in.txt").write_text("".join(f"{line}\n" for line in lines))
    out = tmp_path / "out.txt"
    translate(tiny_checkpoint.path, input=tmp_path / "in.txt", output=out, scores=True, confidences=True,
              alignments=True)  # fmt: skip
    rows = [row.split("\t", 3) for row in out.read_text().split("\n")[:-1]]
    assert len(rows) == len(lines)
    for (score, conf, links, text), line in zip(rows, lines, strict=True):
        float(score)
        assert 0.0 <= float(conf) <= 1.0
        assert (float(conf) == 0.0 and links == "" and text == "") if not line else float(conf) > 0.0
