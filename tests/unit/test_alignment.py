"""Word alignments (`nmt translate --alignments`): pieces to words, links from attention, the output column,
and the links against a one-sentence teacher-forced pass computed here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nmt.decode.alignment import prefix_words, word_links
from nmt.decode.translate import load_for_decoding, source_ids, translate, translate_lines
from nmt.errors import NmtError
from tests.conftest import TinyCheckpoint


def layer_attention(model: torch.nn.Module, src: list[int], tgt: list[int]) -> np.ndarray:
    """One sentence's full forward pass: the penultimate decoder layer's head-averaged attention (T, S)."""
    layer = len(model.decoder) - 2  # the tiny model has 2: its first
    with torch.inference_mode():
        _, weights = model(torch.tensor([src]), torch.tensor([src]) == 0, torch.tensor([[2, *tgt]]),
                           return_attention=True, attention_layer=layer)  # fmt: skip
    return weights[0].float().numpy()


def test_a_piece_belongs_to_the_last_word_of_the_text_up_to_it() -> None:
    # pieces "▁Ein" "▁Mann" "." decode, prefix by prefix, to "Ein", "Ein Mann", "Ein Mann."
    assert prefix_words(["Ein", "Ein Mann", "Ein Mann."], count=2) == [0, 1, 1]
    # an unknown piece decodes as a word of its own (" ⁇ "); a lone "▁" adds no word yet
    assert prefix_words(["a", "a \u2047 ", "a \u2047 b", "a \u2047 b ", "a \u2047 b ,"], count=4) == [0, 1, 2, 2, 3]
    assert prefix_words(["", "x"], count=1) == [-1, 0]
    assert prefix_words(["a", "a b", "a b c"], count=2) == [0, 1, 1]  # at most count - 1


def test_each_output_piece_links_to_its_most_attended_source_word() -> None:
    weights = np.array(
        [
            [0.7, 0.1, 0.1, 0.1],  # output piece 0 (word 0) -> source piece 0 (word 0)
            [0.1, 0.1, 0.6, 0.2],  # piece 1 (word 0) -> source piece 2 (word 1)
            [0.1, 0.1, 0.1, 0.7],  # piece 2 (word 1) -> source piece 3 is eos (no word): next best, piece 0
            [0.1, 0.5, 0.2, 0.2],  # piece 3 (word 1) -> source piece 1 (word 1)
        ]
    )
    links = word_links(weights, src_words=[0, 1, 1, -1], tgt_words=[0, 0, 1, 1])
    assert links == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_translate_writes_links_within_both_sides_words_and_equal_to_one_sentence_passes(
    tiny_checkpoint: TinyCheckpoint, tmp_path: Path
) -> None:
    lines = (tiny_checkpoint.corpus / "test.src").read_text().splitlines()[:12] + ["", "alpha"]
    src_file = tmp_path / "in.txt"
    src_file.write_text("".join(f"{line}\n" for line in lines))
    out = tmp_path / "out.txt"
    translate(tiny_checkpoint.path, input=src_file, output=out, scores=True, alignments=True,
              overrides=["decode.nbest=2", "decode.beam=3"])  # fmt: skip
    rows = out.read_text().split("\n")[:-1]
    assert len(rows) == 2 * len(lines)  # nbest lines per input line, empty input included
    for k, line in enumerate(lines):
        for row in rows[2 * k : 2 * k + 2]:
            score, links, text = row.split("\t", 2)
            float(score)
            pairs = [tuple(map(int, link.split("-"))) for link in links.split()]
            if not line.strip() or not text.strip():
                assert pairs == []
                continue
            src_n, tgt_n = len(line.split()), len(text.split())
            assert all(0 <= i < src_n and 0 <= j < tgt_n for i, j in pairs), (line, text, pairs)
            assert {j for _, j in pairs} == set(range(tgt_n))  # every output word is linked
    # every hypothesis' links against one unbatched teacher-forced pass per sentence, mapped to words here
    loaded, decode_cfg, device = load_for_decoding(tiny_checkpoint.path, overrides=["decode.nbest=2"])
    src_ids, _ = source_ids(loaded, lines)
    for k, translations in enumerate(translate_lines(loaded, lines, decode_cfg, device=device, alignments=True)):
        for t in translations:
            if not t.ids:
                continue
            weights = layer_attention(loaded.model, src_ids[k], list(t.ids))
            text_ids = src_ids[k][:-1]  # without eos
            src_word = [len(loaded.vocab.decode_src([text_ids[: m + 1]])[0].split()) - 1 for m in range(len(text_ids))]
            tgt_word = [len(loaded.vocab.decode_tgt([list(t.ids[: m + 1])])[0].split()) - 1 for m in range(len(t.ids))]
            src_word = np.minimum(src_word, len(lines[k].split()) - 1)
            tgt_word = np.minimum(tgt_word, len(t.text.split()) - 1)
            expected = {(int(src_word[int(np.argmax(weights[n, : len(text_ids)]))]), int(tgt_word[n]))
                        for n in range(len(t.ids))}  # fmt: skip
            assert {tuple(map(int, link.split("-"))) for link in t.alignment.split()} == expected, (lines[k], t.text)


def test_alignments_from_a_model_without_attention_are_an_error_before_translating(
    tiny_checkpoint: TinyCheckpoint, tmp_path: Path
) -> None:
    from nmt.config import config_from_dict, config_to_dict
    from nmt.data.vocab import Vocab
    from nmt.model import build_model

    ckpt = torch.load(tiny_checkpoint.path, weights_only=True)
    raw = ckpt["config"]
    raw["model"].update(arch="rnn", attention="none", input_feeding=None)
    cfg = config_from_dict(raw, where="test")
    vocab = Vocab(ckpt["vocab"]["src"], ckpt["vocab"]["tgt"])
    model = build_model(cfg.model, src_vocab_size=vocab.src_size, tgt_vocab_size=vocab.tgt_size)
    ckpt.update(config=config_to_dict(cfg), model=model.state_dict())
    path = tmp_path / "rnn.pt"
    torch.save(ckpt, path)
    (tmp_path / "in.txt").write_text("alpha bravo\n")
    with pytest.raises(NmtError, match="this model has no attention"):
        translate(path, input=tmp_path / "in.txt", output=tmp_path / "out.txt", alignments=True)
    assert not (tmp_path / "out.txt").exists()
