"""The CTranslate2 engine on a long repeating line: its patience-bounded beam search must not stop at a
short output where nmt's exact search finds a long, better one (audit at 27dff17: 17 tokens where
nmt's search gives 119).

Oracle: nmt's native beam search on the same checkpoint (`nmt.decode.beam`, exact stopping rule).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from nmt.checkpoint import read_checkpoint, save_checkpoint
from nmt.config import DecodeConfig
from nmt.decode import ct2
from nmt.decode.search import search
from nmt.decode.translate import load_for_decoding
from nmt.export.ct2 import export_checkpoint
from nmt.tokens import BOS_ID, EOS_ID, PAD_ID
from tests.corpora import toy_vocabs
from tests.unit.test_export import PAIRS, write_checkpoint

CPU = torch.device("cpu")
REPEATING = " ".join(["alpha bravo"] * 10)  # 110 source pieces
LOOP_ID = 10  # the token the model keeps repeating


@pytest.fixture(scope="module")
def repeating(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A random model that repeats one token with high probability and gives EOS enough mass at every
    step to be among the K best candidates now and then, as a trained model does on a repeating line:
    short outputs finish early, and the long one that repeats to the length limit scores best."""
    tmp = tmp_path_factory.mktemp("repeating")
    ckpt = write_checkpoint(tmp / "model.pt", toy_vocabs(PAIRS)[True], share_embeddings="none", max_len=256)
    raw = read_checkpoint(ckpt)
    weights = raw["model"]
    weights["dec_norm.bias"][0] += 3.0  # a feature every decoder output carries ...
    weights["out_proj.weight"][LOOP_ID, 0] = 2.0  # ... that makes one token likely
    weights["out_proj.weight"][EOS_ID, 0] = 1.2  # ... EOS a runner-up
    weights["out_proj.weight"][[PAD_ID, BOS_ID], 0] = -10.0  # ... and pad/bos very unlikely
    save_checkpoint(ckpt, raw)
    export_checkpoint(ckpt, tmp / "ct2")
    return ckpt, tmp / "ct2"


class CountingTranslator:
    """A CTranslate2 translator that records the patience of each `translate_batch` call."""

    def __init__(self, translator: Any) -> None:
        self.translator, self.calls = translator, []

    def translate_batch(self, sources: list[list[str]], **options: Any) -> list[Any]:
        self.calls.append((len(sources), options["patience"]))
        return self.translator.translate_batch(sources, **options)

    def score_batch(self, *args: Any, **options: Any) -> list[Any]:
        return self.translator.score_batch(*args, **options)


def decode_both(repeating: tuple[Path, Path], lines: list[str]) -> tuple[list, Any, list[list[int]], DecodeConfig]:
    """nmt's hypotheses for `lines` (beam 5, average/alpha 1), the export's engine, the source ids, the config."""
    ckpt, export = repeating
    overrides = ["decode.beam=5", "decode.length_penalty=average", "decode.alpha=1.0"]
    native, cfg, _ = load_for_decoding(ckpt, overrides=overrides)
    engine, _, _ = load_for_decoding(export, overrides=overrides)
    src = [s + [EOS_ID] for s in native.vocab.encode_src(lines)]
    return search(native.model, src, cfg, device=CPU), engine.model, src, cfg


RULES_OFF = {"SHORT_RATIO": 0.0, "REPEATED_BIGRAMS": 1.01}  # (a share of repeated bigrams is at most 1)


@pytest.mark.parametrize("rule", ["both", "REPEATED_BIGRAMS", "SHORT_RATIO"])
def test_repeating_line_gets_native_output(
    rule: str, repeating: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each rule alone (the source repeats itself; the output is much shorter than the source) catches it."""
    ours, engine, src, cfg = decode_both(repeating, [REPEATING])
    assert len(src[0]) - 1 == 110 and len(ours[0][0].tokens) > 100  # the premise: nmt's best is long

    with monkeypatch.context() as patch:  # patience 2 alone (the rules off) stops far too early
        for name, value in RULES_OFF.items():
            patch.setattr(ct2, name, value, raising=False)  # (raising: the test also runs on older code)
        early = engine.search(src, cfg)[0][0]
    assert len(early.tokens) < 30 and early.score < ours[0][0].score - 0.1

    if rule != "both":
        off = next(name for name in RULES_OFF if name != rule)
        monkeypatch.setattr(ct2, off, RULES_OFF[off], raising=False)
    theirs = engine.search(src, cfg)[0][0]
    assert theirs.tokens == ours[0][0].tokens
    assert theirs.score == pytest.approx(ours[0][0].score, abs=0.01)  # CTranslate2 renormalises (see nmt.decode.ct2)


def test_only_degenerate_lines_are_decoded_again(repeating: tuple[Path, Path]) -> None:
    """Ordinary lines keep the single patience-2 call: the repeating one alone is decoded again."""
    lines = [p[0] for p in PAIRS[:20]]
    lines.insert(7, REPEATING)
    ours, engine, src, cfg = decode_both(repeating, lines)
    engine.translator = CountingTranslator(engine.translator)
    theirs = engine.search(src, cfg)
    assert [n for n, patience in engine.translator.calls if patience > ct2.PATIENCE] == [1]
    assert theirs[7][0].tokens == ours[7][0].tokens
    assert all(not ct2.degenerate(s, len(row[0].tokens)) for j, (s, row) in enumerate(zip(src, theirs)) if j != 7)


def test_degenerate() -> None:
    sentence = list(range(10, 24))  # 14 distinct pieces
    assert not ct2.degenerate([*sentence, EOS_ID], 14) and not ct2.degenerate([*sentence, EOS_ID], 5)
    assert ct2.degenerate([*sentence, EOS_ID], 4)  # under 0.3 tokens per source piece
    assert ct2.degenerate([*sentence * 3, EOS_ID], 42)  # 27 of 41 bigrams repeat earlier ones
    assert not ct2.degenerate([*sentence * 2, EOS_ID], 28)  # 13 of 27
    assert not ct2.degenerate([7, EOS_ID], 1) and not ct2.degenerate([EOS_ID], 0)


@pytest.mark.parametrize("penalty", ["none", "average-0"])
def test_no_second_search_without_a_length_penalty(repeating: tuple[Path, Path], penalty: str) -> None:
    """With CTranslate2's length_penalty 0 its search ends when the best beam finishes, whatever the
    patience (then it is exact): nothing to gain from decoding again."""
    _, export = repeating
    overrides = ["decode.beam=5", "decode.length_penalty=none" if penalty == "none" else "decode.alpha=0"]
    engine, cfg, _ = load_for_decoding(export, overrides=overrides)
    engine.model.translator = CountingTranslator(engine.model.translator)  # type: ignore[union-attr]
    src = [s + [EOS_ID] for s in engine.vocab.encode_src([REPEATING])]
    engine.model.search(src, cfg)  # type: ignore[union-attr]
    assert [patience for _, patience in engine.model.translator.calls] == [ct2.PATIENCE]  # type: ignore[union-attr]
