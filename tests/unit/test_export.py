"""CTranslate2 export: the exported model computes nmt's log-probs, translates like nmt, and fails clearly.

Oracles: nmt's own teacher-forced log-probs (log_softmax of `model.forward`) for every
exportable variant, and nmt's native beam search on the same checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nmt import export_format  # noqa: E402
from nmt.checkpoint import read_checkpoint, save_checkpoint  # noqa: E402
from nmt.config import DecodeConfig, ExperimentConfig, ModelConfig, config_from_dict  # noqa: E402
from nmt.data.vocab import Vocab  # noqa: E402
from nmt.decode import ct2  # noqa: E402
from nmt.decode.load import load_model  # noqa: E402
from nmt.decode.translate import load_for_decoding, translate, translate_lines  # noqa: E402
from nmt.errors import CheckpointError, ConfigError, NmtError  # noqa: E402
from nmt.export.ct2 import export_checkpoint  # noqa: E402
from nmt.tokens import BOS_ID, EOS_ID, PAD_ID  # noqa: E402
from tests.conftest import TinyCheckpoint, save_random_checkpoint  # noqa: E402
from tests.corpora import reverse_pairs, toy_vocabs  # noqa: E402

CPU = torch.device("cpu")
PAIRS = reverse_pairs(300, seed=7)


@pytest.fixture(scope="module")
def vocabs() -> dict[bool, Vocab]:
    return toy_vocabs(PAIRS)


def write_checkpoint(path: Path, vocab: Vocab, *, seed: int = 0, **model: object) -> Path:
    """A self-contained checkpoint of a randomly initialised model (no training)."""
    cfg = config_from_dict(
        {
            "data": {"src_lang": "src", "tgt_lang": "tgt"},
            "vocab": {"joint": vocab.joint, "size": vocab.src_size},
            "model": {"preset": "tiny", "max_len": 48, **model},
            "decode": {"device": "cpu", "beam": 3},
        }
    )
    return save_random_checkpoint(path, cfg, vocab, seed=seed)


# Every switch of the exportable Transformer, each value in at least one model; separate
# vocabularies where the embeddings allow them.
VARIANTS = {
    "pre-relu-sinusoidal-all": dict(joint=True),
    "post-gelu-learned-decoder": dict(joint=False, norm="post", activation="gelu", positions="learned",
                                      share_embeddings="decoder"),
    "pre-gelu-sinusoidal-none-1x3-4heads": dict(joint=False, activation="gelu", share_embeddings="none",
                                                enc_layers=1, dec_layers=3, n_heads=4),
    "post-relu-learned-all": dict(joint=True, norm="post", positions="learned"),
}  # fmt: skip


def teacher_forced(model: torch.nn.Module, src: list[int], tgt: list[int]) -> list[float]:
    """nmt's log-probs of tgt + [eos] given src (ending in eos)."""
    with torch.inference_mode():
        logits = model(torch.tensor([src]), torch.zeros(1, len(src), dtype=torch.bool), torch.tensor([[BOS_ID, *tgt]]))
        logp = logits[0].log_softmax(-1)
    return [logp[t, i].item() for t, i in enumerate([*tgt, EOS_ID])]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_score_parity_with_nmt(variant: str, vocabs: dict[bool, Vocab], tmp_path: Path) -> None:
    options = dict(VARIANTS[variant])
    vocab = vocabs[bool(options.pop("joint"))]
    ckpt = write_checkpoint(tmp_path / "model.pt", vocab, **options)
    result = export_checkpoint(ckpt, tmp_path / "ct2")
    assert result.step == 7 and (tmp_path / "ct2" / export_format.MANIFEST).is_file()
    spm = ["spm.model"] if vocab.joint else ["spm.src.model", "spm.tgt.model"]
    assert all((tmp_path / "ct2" / name).is_file() for name in spm)

    model = load_model(ckpt).model
    engine = ct2.load_export(export_format.read_export(tmp_path / "ct2"), device="cpu", precision="fp32").model
    src_ids = [s + [EOS_ID] for s in vocab.encode_src([p[0] for p in PAIRS[:6]])]
    tgt_ids = vocab.encode_tgt([p[1] for p in PAIRS[:6]])
    tgt_ids[0] = tgt_ids[0][:1]  # lengths differ within the batch: padding on both sides
    scored = engine.translator.score_batch(  # type: ignore[union-attr]
        [engine.pieces(s) for s in src_ids],  # type: ignore[union-attr]
        [[engine.tgt_pieces[i] for i in t] for t in tgt_ids],  # type: ignore[union-attr]
    )
    worst = 0.0
    for src, tgt, res in zip(src_ids, tgt_ids, scored, strict=True):
        expected = teacher_forced(model, src, tgt)  # type: ignore[arg-type]
        assert len(res.log_probs) == len(expected)
        worst = max(worst, max(abs(a - b) for a, b in zip(res.log_probs, expected, strict=True)))
    print(f"{variant}: max |log-prob difference| = {worst:.2e}")
    assert worst < 1e-4


def nmt_score(model: torch.nn.Module, src: list[int], tgt: list[int], cfg: DecodeConfig) -> float:
    """nmt's length-normalised score of an output (the beam's ranking value), teacher-forced."""
    lp = 1.0 if cfg.length_penalty == "none" else (len(tgt) + 1) ** cfg.alpha
    return math.fsum(teacher_forced(model, src, tgt)) / lp


@pytest.fixture(scope="module")
def exported(tiny_checkpoint: TinyCheckpoint, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "tiny-ct2"
    export_checkpoint(tiny_checkpoint.path, out)
    return out


@pytest.fixture(scope="module")
def eos_prone(vocabs: dict[bool, Vocab], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A random model that ends its outputs at varied lengths and gives pad and bos almost no mass,
    as a trained one does (the tiny checkpoint only ever stops at the length limit)."""
    tmp = tmp_path_factory.mktemp("eos_prone")
    ckpt = write_checkpoint(tmp / "model.pt", vocabs[True], share_embeddings="none")
    raw = read_checkpoint(ckpt)
    weights = raw["model"]
    weights["dec_norm.bias"][0] += 3.0  # a feature every decoder output carries ...
    weights["out_proj.weight"][EOS_ID, 0] = 0.5  # ... that makes EOS likelier
    weights["out_proj.weight"][[PAD_ID, BOS_ID], 0] = -10.0  # ... and pad/bos very unlikely
    save_checkpoint(ckpt, raw)
    export_checkpoint(ckpt, tmp / "ct2")
    return ckpt, tmp / "ct2"


@pytest.mark.parametrize("penalty", ["average", "none"])
@pytest.mark.parametrize("which", ["tiny", "eos_prone"])
def test_translate_parity_with_native_search(
    which: str, penalty: str, request: pytest.FixtureRequest, tiny_checkpoint: TinyCheckpoint
) -> None:
    if which == "tiny":
        ckpt, export = tiny_checkpoint.path, request.getfixturevalue("exported")
    else:
        ckpt, export = request.getfixturevalue("eos_prone")
    lines = [p[0] for p in PAIRS[:30]]
    lines[3:3] = ["", "   "]  # empty input, empty output, in place
    native, cfg, _ = load_for_decoding(ckpt, overrides=[f"decode.length_penalty={penalty}"])
    engine, ct2_cfg, _ = load_for_decoding(export, overrides=[f"decode.length_penalty={penalty}"])
    assert ct2_cfg == cfg and cfg.beam == 3
    assert engine.cfg.data.tgt_lang == native.cfg.data.tgt_lang and engine.model.max_len == native.model.max_len
    cfg = dataclasses.replace(cfg, nbest=2)
    ours = list(translate_lines(native, lines, cfg, device=CPU))
    theirs = list(translate_lines(engine, lines, cfg, device=CPU))
    assert len(theirs) == len(lines) and all(len(row) == 2 for row in theirs)
    model, src_ids = native.model, [s + [EOS_ID] if s else [] for s in native.vocab.encode_src(lines)]
    same, lengths = 0, set()
    for src, a, b in zip(src_ids, ours, theirs, strict=True):
        if not src:
            assert [t.text for t in b] == ["", ""] and b[0].score == 0.0
            continue
        assert b[0].score >= b[1].score
        assert all(PAD_ID not in t.ids and BOS_ID not in t.ids and EOS_ID not in t.ids for t in b)
        lengths.add(len(b[0].ids))
        if a[0].ids == b[0].ids:
            same += 1
            assert b[0].score == pytest.approx(a[0].score, abs=0.2)  # CTranslate2 renormalises (see nmt.decode.ct2)
        elif which == "eos_prone":
            # a different output comes from CTranslate2's shorter search, never a better output; the tiny
            # random model gives pad and bos enough mass that CTranslate2's renormalisation changes its beams
            assert nmt_score(model, src, list(b[0].ids), cfg) <= nmt_score(model, src, list(a[0].ids), cfg) + 1e-4
    print(f"{which}/{penalty}: {same}/{len(lines) - 2} best outputs identical to nmt's, lengths {sorted(lengths)}")
    assert same >= (len(lines) - 2) // 2
    assert which == "tiny" or len(lengths) > 1  # outputs that end by EOS, at several lengths


def test_output_limit_is_per_sentence(exported: Path, tiny_checkpoint: TinyCheckpoint) -> None:
    """Each sentence gets its own a*|x|+b limit; hypotheses cut at the limit get nmt's exact score."""
    engine, cfg, _ = load_for_decoding(exported, overrides=["decode.max_len_a=0.5", "decode.max_len_b=1"])
    native = load_model(tiny_checkpoint.path)
    lines = ["alpha", "alpha bravo charlie delta echo foxtrot golf hotel"]
    src_ids = [s + [EOS_ID] for s in native.vocab.encode_src(lines)]
    hyps = engine.model.search(src_ids, cfg)  # type: ignore[union-attr]
    for src, row in zip(src_ids, hyps, strict=True):
        limit = ct2.output_limit(len(src), cfg, max_len=native.model.max_len)
        assert row and all(len(h.tokens) <= limit for h in row)
        for h in row:
            if len(h.tokens) == limit:  # cut (or finished there): the score is nmt's, EOS included
                assert h.score == pytest.approx(nmt_score(native.model, src, h.tokens, cfg), abs=1e-4)  # type: ignore[arg-type]


@pytest.mark.parametrize("which", ["tiny", "eos_prone"])
def test_greedy_outputs_equal_nmt_at_every_sentence_limit(
    which: str, request: pytest.FixtureRequest, tiny_checkpoint: TinyCheckpoint
) -> None:
    """Greedy: sentences of many lengths decoded together under the longest one's limit, each cut at
    its own limit, give exactly nmt's greedy outputs (the tiny model always runs to its limit)."""
    if which == "tiny":
        ckpt, export = tiny_checkpoint.path, request.getfixturevalue("exported")
    else:
        ckpt, export = request.getfixturevalue("eos_prone")
    overrides = ["decode.beam=1", "decode.max_len_a=0.5", "decode.max_len_b=2"]
    native, cfg, _ = load_for_decoding(ckpt, overrides=overrides)
    engine, _, _ = load_for_decoding(export, overrides=overrides)
    lines = [" ".join(p[0].split()[: 1 + i % 9]) for i, p in enumerate(PAIRS[:30])]  # 1 to 9 words
    ours = [row[0] for row in translate_lines(native, lines, cfg, device=CPU)]
    theirs = [row[0] for row in translate_lines(engine, lines, cfg, device=CPU)]
    src_ids = [s + [EOS_ID] for s in native.vocab.encode_src(lines)]
    limits = [ct2.output_limit(len(s), cfg, max_len=native.model.max_len) for s in src_ids]
    assert len(set(limits)) > 3
    assert [t.ids for t in theirs] == [t.ids for t in ours]
    assert [t.score for t in theirs] == pytest.approx([t.score for t in ours], abs=0.2)  # CTranslate2 renormalises
    assert which == "eos_prone" or all(len(t.ids) == limit for t, limit in zip(ours, limits, strict=True))


def test_quantized_export_translates(tiny_checkpoint: TinyCheckpoint, tmp_path: Path) -> None:
    out = tmp_path / "int8"
    result = export_checkpoint(tiny_checkpoint.path, out, quantization="int8")
    full = export_checkpoint(tiny_checkpoint.path, tmp_path / "fp32")
    assert result.size_bytes < full.size_bytes / 2
    engine, cfg, _ = load_for_decoding(out)
    rows = list(translate_lines(engine, ["alpha bravo", ""], cfg, device=CPU))
    assert len(rows) == 2 and rows[1][0].text == ""


# ---------------------------------------------------------------- errors


def test_unknown_quantization_names_the_nearest(tiny_checkpoint: TinyCheckpoint, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean int8_float32"):
        export_checkpoint(tiny_checkpoint.path, tmp_path / "out", quantization="int8_float23")
    assert not (tmp_path / "out").exists()


def test_recurrent_checkpoint_is_refused(vocabs: dict[bool, Vocab], tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path / "rnn.pt", vocabs[True], arch="rnn", enc_layers=1, dec_layers=1)
    with pytest.raises(CheckpointError, match="recurrent") as err:
        export_checkpoint(ckpt, tmp_path / "out")
    assert "nmt translate" in str(err.value)
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == [ckpt]


def test_corrupt_checkpoint(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match="not a readable nmt checkpoint"):
        export_checkpoint(bad, tmp_path / "out")
    assert list(tmp_path.iterdir()) == [bad]


def test_existing_output_dir(tiny_checkpoint: TinyCheckpoint, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    export_checkpoint(tiny_checkpoint.path, out)  # an empty directory is fine
    with pytest.raises(NmtError, match="not empty") as err:
        export_checkpoint(tiny_checkpoint.path, out)
    assert "--force" in str(err.value)
    (out / "marker").write_text("old export")
    export_checkpoint(tiny_checkpoint.path, out, quantization="int8", force=True)
    assert not (out / "marker").exists() and export_format.read_export(out).quantization == "int8"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp or old directory left
    other = tmp_path / "other"
    other.mkdir()
    (other / "precious.txt").write_text("keep")
    with pytest.raises(NmtError, match="not an nmt export"):
        export_checkpoint(tiny_checkpoint.path, other, force=True)
    assert (other / "precious.txt").read_text() == "keep"


def test_engine_refuses_what_it_cannot_do(exported: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="gnmt"):
        load_for_decoding(exported, overrides=["decode.length_penalty=gnmt"])
    with pytest.raises(ConfigError, match="sampling"):
        load_for_decoding(exported, overrides=["decode.sampling=true"])
    src = tmp_path / "in.txt"
    src.write_text("alpha\n")
    with pytest.raises(NmtError, match="attention-dir"):
        translate(exported, input=src, output=tmp_path / "out.txt", attention_dir=tmp_path / "maps")
    assert not (tmp_path / "out.txt").exists()


def test_directory_that_is_not_an_export(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"")
    with pytest.raises(CheckpointError, match="not an nmt export"):
        load_for_decoding(tmp_path)
    (tmp_path / export_format.MANIFEST).write_text('{"format": "something-else"}')
    with pytest.raises(CheckpointError, match="not a readable nmt export"):
        load_for_decoding(tmp_path)


def test_missing_ctranslate2_gives_the_install_hint(
    tiny_checkpoint: TinyCheckpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # `import ctranslate2` now raises ImportError
    with pytest.raises(NmtError, match="ctranslate2") as err:
        export_checkpoint(tiny_checkpoint.path, tmp_path / "out")
    assert "pip install 'nmt[ct2]'" in str(err.value)


def test_export_config_round_trip(exported: Path, tiny_checkpoint: TinyCheckpoint) -> None:
    info = export_format.read_export(exported)
    native = load_model(tiny_checkpoint.path)
    assert isinstance(info.cfg, ExperimentConfig)
    assert info.cfg.decode == native.cfg.decode and info.cfg.model == native.cfg.model
    assert info.manifest["checkpoint"] == str(tiny_checkpoint.path.resolve())
    assert info.vocab_models[0] == native.vocab.src_model
    assert isinstance(info.cfg.model, ModelConfig)


# ---------------------------------------------------------------- multilingual models


@pytest.fixture(scope="module", params=["target", "source"])
def multilingual(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A random multilingual checkpoint (language token as the decoder's first token, or as a source tag)
    and its export."""
    from tests.conftest import random_multilingual_checkpoint

    tmp = tmp_path_factory.mktemp(f"multilingual_{request.param}")
    ckpt = random_multilingual_checkpoint(tmp, lang_token=request.param)
    export_checkpoint(ckpt, tmp / "ct2")
    return ckpt, tmp / "ct2"


def test_multilingual_export_scores_every_direction_as_nmt(multilingual: tuple[Path, Path]) -> None:
    """Per target language: CTranslate2's log-probs of y + eos (the language token as target_prefix, or
    the source tag) equal nmt's teacher-forced ones from that token."""
    from nmt.data.directions import marks_for

    ckpt, export = multilingual
    native = load_model(ckpt)
    engine = ct2.load_export(export_format.read_export(export), device="cpu", precision="fp32").model
    info = export_format.read_export(export)
    assert info.cfg.data.directions == native.cfg.data.directions
    assert info.cfg.data.lang_token == native.cfg.data.lang_token
    lines = ["one two three", "forty", "seven hundred , nine"]
    worst = 0.0
    for tgt_lang in ("de", "fr", "en"):
        marks = marks_for(native.cfg, native.vocab, tgt_lang)
        tag = [] if marks.src_tag is None else [marks.src_tag]
        src_ids = [tag + s + [EOS_ID] for s in native.vocab.encode_src(lines)]
        tgt_ids = native.vocab.encode_tgt(["zwei drei", "un", "three"])
        prefix = [engine.tgt_pieces[marks.start_id]] if engine.prefix_start else []  # type: ignore[union-attr]
        scored = engine.translator.score_batch(  # type: ignore[union-attr]
            [engine.pieces(s) for s in src_ids],  # type: ignore[union-attr]
            [prefix + [engine.tgt_pieces[i] for i in t] for t in tgt_ids],  # type: ignore[union-attr]
        )
        for src, tgt, res in zip(src_ids, tgt_ids, scored, strict=True):
            with torch.inference_mode():
                logits = native.model(  # type: ignore[operator]
                    torch.tensor([src]), torch.zeros(1, len(src), dtype=torch.bool),
                    torch.tensor([[marks.start_id, *tgt]]),
                )  # fmt: skip
            logp = logits[0].log_softmax(-1)
            expected = [logp[t, i].item() for t, i in enumerate([*tgt, EOS_ID])]
            assert len(res.log_probs) == len(expected)
            worst = max(worst, max(abs(a - b) for a, b in zip(res.log_probs, expected, strict=True)))
    print(f"lang_token {native.cfg.data.lang_token}: max |log-prob difference| = {worst:.2e}")
    assert worst < 1e-4


def test_multilingual_export_translates_each_direction_and_pivot_as_the_checkpoint(
    multilingual: tuple[Path, Path],
) -> None:
    """Greedy search on the export, per trained direction and through a pivot, gives the checkpoint's
    outputs exactly (nmt's own search is the reference)."""
    from nmt.decode.languages import LanguageRequest, choose_route
    from nmt.decode.translate import TranslateStats, translate_route

    ckpt, export = multilingual
    lines = ["one two three", "forty , six", "", "seven hundred nine", "eighty"]
    requests = [LanguageRequest("de", "en"), LanguageRequest("fr", "en"), LanguageRequest("en", "de"),
                LanguageRequest("fr", "de", pivot="en")]  # fmt: skip
    outputs = {}
    for path in (ckpt, export):
        loaded, cfg, device = load_for_decoding(path, overrides=["decode.beam=1", "decode.max_len_b=6"])
        outputs[path] = [
            [row[0].ids for row in translate_route(
                loaded, lines, cfg, choose_route(loaded.cfg, loaded.vocab, r), device=device, stats=TranslateStats()
            )]
            for r in requests
        ]  # fmt: skip
    assert outputs[export] == outputs[ckpt]
    if load_model(ckpt).cfg.data.lang_token == "target":  # the random model's outputs follow its first token
        assert len({tuple(map(tuple, rows)) for rows in outputs[ckpt]}) == len(requests)


def test_export_attention_is_the_checkpoints_alignment_layer_head_average(
    exported: Path, tiny_checkpoint: TinyCheckpoint
) -> None:
    """An export's `return_attention` (its alignment layer = the checkpoint's `alignment_layer`, all heads) on
    the checkpoint's own translations equals the checkpoint's teacher-forced attention of that layer, so
    --alignments and --format html give the same links on either."""
    from nmt.decode.alignment import attention_rows

    lines = [p[0] for p in PAIRS[:12]]
    native, cfg, _ = load_for_decoding(tiny_checkpoint.path)
    engine, _, _ = load_for_decoding(exported)
    src = [s + [EOS_ID] for s in native.vocab.encode_src(lines)]
    tgt = [list(t[0].ids) for t in translate_lines(native, lines, cfg, device=CPU)]
    rows = attention_rows(engine.model, src, tgt, start_id=BOS_ID, device=CPU)
    for s, t, got in zip(src, tgt, rows, strict=True):
        with torch.inference_mode():
            _, weights = native.model(torch.tensor([s]), torch.tensor([s]) == PAD_ID, torch.tensor([[BOS_ID, *t]]),
                                      return_attention=True, attention_layer=0)  # fmt: skip
        want = weights[0].float().numpy()[: len(t)]  # the tiny model's 2 decoder layers: the first
        assert got.shape == want.shape == (len(t), len(s))
        np.testing.assert_allclose(got[:, :-1], want[:, :-1], atol=2e-3)  # CTranslate2 gives no eos column
    ours = list(translate_lines(native, lines, cfg, device=CPU, alignments=True))
    theirs = list(translate_lines(engine, lines, cfg, device=CPU, alignments=True))
    same = sum(a[0].alignment == b[0].alignment for a, b in zip(ours, theirs, strict=True) if a[0].ids == b[0].ids)
    assert same == sum(a[0].ids == b[0].ids for a, b in zip(ours, theirs, strict=True)) > 0


def test_export_token_logprobs_are_the_checkpoints(exported: Path, tiny_checkpoint: TinyCheckpoint) -> None:
    """`--confidence` on an export (CTranslate2's `score_batch`) gives the checkpoint's token log-probs."""
    from nmt.decode.scoring import token_logprobs

    lines = [p[0] for p in PAIRS[:12]]
    native, cfg, _ = load_for_decoding(tiny_checkpoint.path, overrides=["decode.precision=fp32"])
    engine, _, _ = load_for_decoding(exported)
    src = [s + [EOS_ID] for s in native.vocab.encode_src(lines)]
    tgt = [list(t[0].ids) for t in translate_lines(native, lines, cfg, device=CPU)]
    ours = token_logprobs(native.model, src, tgt, device=CPU)
    theirs = token_logprobs(engine.model, src, tgt, device=CPU)
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=2e-3)


def test_glossary_on_an_export_is_a_one_paragraph_error(exported: Path, tmp_path: Path) -> None:
    """CTranslate2 has no positive constraints: a glossary with an export says to use the checkpoint."""
    glossary = tmp_path / "terms.tsv"
    glossary.write_text("alpha\tBRAVO\n")
    (tmp_path / "in.txt").write_text("alpha charlie\n")
    with pytest.raises(NmtError, match="checkpoint") as err:
        translate(exported, input=tmp_path / "in.txt", output=tmp_path / "out.txt", glossary=glossary)
    assert "\n" not in err.value.message
    assert not (tmp_path / "out.txt").exists()
