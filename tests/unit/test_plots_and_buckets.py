"""Length buckets, the PNG writers of nmt.plots, and teacher-forced attention for heatmaps."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from nmt import plots
from nmt.config import DecodeConfig
from nmt.decode.heatmaps import FirstLines, check_attention, teacher_forced_attention
from nmt.decode.load import LoadedModel, load_model
from nmt.decode.translate import source_ids, translate_lines
from nmt.errors import NmtError
from nmt.evaluate.buckets import bucket_of, parse_boundaries, scores_by_length
from nmt.metrics import corpus_scores
from nmt.tokens import BOS_ID, EOS_ID, PAD_ID
from tests.conftest import TinyCheckpoint
from tests.corpora import reverse_pairs
from tests.unit.toy_models import ToySeq2Seq

PNG = b"\x89PNG\r\n\x1a\n"
CPU = torch.device("cpu")


def test_boundaries_and_bucket_of() -> None:
    assert parse_boundaries("10,20,30") == (10, 20, 30) and parse_boundaries(" 5 ") == (5,)
    for bad in ("", "10,,20", "a", "0,10", "20,10", "10,10", "-5"):
        with pytest.raises(NmtError, match="--buckets"):
            parse_boundaries(bad)
    bounds = (10, 20, 30)
    assert [bucket_of(n, bounds) for n in (0, 9, 10, 19, 20, 29, 30, 500)] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_scores_by_length_is_corpus_scoring_of_each_bucket() -> None:
    pairs = reverse_pairs(30, seed=4, min_len=1, max_len=14)
    src = [s for s, _ in pairs]
    refs = [[t for _, t in pairs]]
    hyps = [" ".join(t.split()[:-1]) if i % 3 else t for i, (_, t) in enumerate(pairs)]
    rows = scores_by_length(src, hyps, refs, (5, 10, 40))
    assert [b.label for b in rows] == ["0-4", "5-9", "10-39", "40+"]
    assert sum(b.sentences for b in rows) == 30 and rows[-1].sentences == 0 and rows[-1].bleu is None
    for b in rows[:-1]:
        keep = [i for i, s in enumerate(src) if b.min_words <= len(s.split()) <= b.max_words]  # type: ignore[operator]
        expected = corpus_scores([hyps[i] for i in keep], [[refs[0][i] for i in keep]])
        assert b.sentences == len(keep) > 0
        assert b.bleu == expected["bleu"].score and b.chrf == expected["chrf"].score


def _read_png(path: Path) -> tuple[int, ...]:
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == PNG and len(data) < 200 * 1024
    return matplotlib.image.imread(path).shape


def test_plots_write_readable_small_pngs(tmp_path: Path) -> None:
    plots.bleu_by_length(
        tmp_path / "a" / "len.png", ["0-9", "10+"], [("x", [20.0, None]), ("y", [10.0, 5.0])], counts=[3, 0]
    )
    assert _read_png(tmp_path / "a" / "len.png")[:2] > (200, 300)
    weights = torch.softmax(torch.randn(40, 60), dim=-1).tolist()  # the longest sentences still make a small file
    plots.attention_heatmap(tmp_path / "h.png", weights, [f"s{i}" for i in range(60)], [f"t{i}" for i in range(40)])
    _read_png(tmp_path / "h.png")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "h.png", "len.png"]  # no temp files left


def test_missing_matplotlib_raises_nmt_error_with_install_hint(tmp_path: Path, monkeypatch) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    with pytest.raises(NmtError) as info:
        plots.bleu_by_length(tmp_path / "x.png", ["0-9"], [("a", [1.0])])
    assert "matplotlib" in info.value.message and info.value.hint and "pip install 'nmt[plot]'" in info.value.hint
    with pytest.raises(NmtError, match="matplotlib"):
        plots.attention_heatmap(tmp_path / "y.png", [[1.0]], ["a"], ["b"])
    assert not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def loaded(tiny_checkpoint: TinyCheckpoint) -> LoadedModel:
    return load_model(tiny_checkpoint.path)


def test_teacher_forced_attention_matches_the_greedy_search(loaded: LoadedModel) -> None:
    """Weights are distributions over the source, one row per target token plus </s>; teacher forcing
    the recorded best ids reproduces the greedy choices, and the ids decode to the output text."""
    lines = [s for s, _ in reverse_pairs(6, seed=9)]
    cfg = DecodeConfig(device="cpu", beam=1, nbest=1, max_len_a=0.0, max_len_b=6)
    first = FirstLines(4)
    best = [t[0] for t in translate_lines(loaded, first.watch(lines), cfg, device=CPU)]
    for t in best:
        first.record(t.ids)
    assert first.lines == lines[:4] and first.best == [t.ids for t in best[:4]]
    src, _ = source_ids(loaded, first.lines)
    for src_ids, tgt_ids in zip(src, first.best, strict=True):
        assert src_ids[-1] == EOS_ID and tgt_ids
        weights = teacher_forced_attention(loaded.model, src_ids, list(tgt_ids), device=CPU)
        assert weights.shape == (len(tgt_ids) + 1, len(src_ids))
        assert torch.allclose(weights.sum(-1), torch.ones(len(tgt_ids) + 1), atol=1e-5) and weights.min() >= 0
        logits = loaded.model(
            torch.tensor([src_ids]), torch.tensor([src_ids]) == PAD_ID, torch.tensor([[BOS_ID, *tgt_ids]])
        )
        logits[..., [PAD_ID, BOS_ID]] = float("-inf")  # the search never emits these
        assert logits[0, :-1].argmax(-1).tolist() == list(tgt_ids)  # greedy picked exactly these tokens
    assert [loaded.vocab.decode_tgt([list(t.ids)])[0] for t in best] == [t.text for t in best]


class _NoWeights(torch.nn.Module):
    """A model family that cannot return attention weights (e.g. a recurrent model with attention: none)."""

    def forward(
        self, src_ids: torch.Tensor, src_pad: torch.Tensor, tgt_in: torch.Tensor, *, return_attention: bool = False
    ) -> torch.Tensor:
        if return_attention:
            raise ValueError("this model has no attention")
        return torch.zeros(tgt_in.shape + (5,))


def test_models_without_attention_are_a_clear_error() -> None:
    for model in (_NoWeights(), ToySeq2Seq()):  # raises ValueError / has no return_attention at all
        with pytest.raises(NmtError, match="this model has no attention") as info:
            check_attention(model, device=CPU)  # type: ignore[arg-type]
        assert "--attention-dir" in (info.value.hint or "")
